"""Issue 22, the traps a new admin fell into: shipped samples that routed live traffic to a made-up portal,
copying a sample refused as a "duplicate route", routes to unknown portals or projects accepted, and
`send-test` without a mapping silently syncing nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge.cli import main
from bridge.mapping import MappingRegistry, check_directory
from bridge.process.supervisor import Supervisor
from bridge.sources import KNOWN_FIELDS
from testkit.fakes.zoho import FakeZoho
from testkit.harness import GITHUB_SECRET, REPO

EXAMPLES = REPO / "mappings" / "examples"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "mappings").mkdir()
    return {
        "BRIDGE_DATA_DIR": str(tmp_path / "var"),
        "MAPPINGS_DIR": str(tmp_path / "mappings"),
        "BROKER_URL": "redis://127.0.0.1:1/0",
        "ZOHO_CLIENT_ID": "",
        "ZOHO_CLIENT_SECRET": "",
        "ZOHO_REFRESH_TOKEN": "",
        "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
    }


def _live(env: dict[str, str], fake: FakeZoho) -> dict[str, str]:
    return env | {
        "ZOHO_API_BASE": fake.base_url,
        "ZOHO_ACCOUNTS_URL": fake.base_url,
        "ZOHO_CLIENT_ID": fake.client_id,
        "ZOHO_CLIENT_SECRET": fake.client_secret,
        "ZOHO_REFRESH_TOKEN": fake.refresh_token,
        "ZOHO_RATE_LIMIT_PER_MINUTE": "0",
    }


def test_the_shipped_mappings_folder_routes_nothing() -> None:
    """A fresh clone's MAPPINGS_DIR loads no file: the examples (made-up portal) sit in a folder never loaded."""
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == ["bugherd.yaml", "bugzilla.yaml", "github.yaml"]
    registry = MappingRegistry(REPO / "mappings", known_fields=KNOWN_FIELDS)
    assert registry.all() == [] and registry.problems == {}
    for example in EXAMPLES.glob("*.yaml"):
        assert example.read_text().startswith("# EXAMPLE, not loaded")


def test_copying_an_example_into_the_mappings_folder_is_accepted(tmp_path: Path) -> None:
    """The walk-through's step "copy github.yaml" no longer meets a "duplicate route" from the sample."""
    home = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", home)
    shutil.copy(EXAMPLES / "github.yaml", home / "github.yaml")
    shutil.copy(EXAMPLES / "github.yaml", home / "my-github.yaml")  # and the sample under another name
    (home / "github.yaml").unlink()
    assert check_directory(home, known_fields=KNOWN_FIELDS) == []
    assert [m.name for m in MappingRegistry(home, known_fields=KNOWN_FIELDS).all()] == ["my-github"]


def test_mappings_check_refuses_a_portal_or_project_zoho_does_not_know(env: dict[str, str]) -> None:
    mapping = Path(env["MAPPINGS_DIR"]) / "github.yaml"
    text = (EXAMPLES / "github.yaml").read_text()
    with FakeZoho() as fake:
        live = _live(env, fake)
        mapping.write_text(text.replace('acme/api: "1752587000000098001"', 'acme/api: "1752587000000099999"'))
        result = CliRunner().invoke(main, ["mappings", "check"], env=live)
        assert result.exit_code == 1, result.output
        line = next(i for i, t in enumerate(mapping.read_text().splitlines(), 1) if "acme/api:" in t)
        assert f"github.yaml:{line}: zoho.project.by_source_project.acme/api: project '1752587000000099999' is " in (
            result.output
        )
        assert "1752587000000098001 (API)" in result.output  # the projects it could have meant
        mapping.write_text(text.replace('portal: "739121528"', 'portal: "111"'))
        result = CliRunner().invoke(main, ["mappings", "check"], env=live)
        assert result.exit_code == 1 and "zoho.portal: portal '111' is not a Zoho portal" in result.output
        assert "(yours: 739121528)" in result.output
        mapping.write_text(text)
        ok = CliRunner().invoke(main, ["mappings", "check"], env=live)
        assert ok.exit_code == 0, ok.output
    offline = CliRunner().invoke(main, ["mappings", "check"], env=env)  # dry-run: nothing to ask
    assert offline.exit_code == 0, offline.output


def test_run_refuses_an_unknown_route_live_but_not_in_dry_run(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[bool] = []
    monkeypatch.setattr(Supervisor, "run", lambda self: started.append(self.settings.dry_run) or 0)
    mapping = Path(env["MAPPINGS_DIR"]) / "github.yaml"
    mapping.write_text((EXAMPLES / "github.yaml").read_text().replace("1752587000000097024", "1752587000000011111"))
    with FakeZoho() as fake:
        result = CliRunner().invoke(main, ["run"], env=_live(env, fake))
    assert result.exit_code == 1 and started == []
    assert "Zoho does not know" in result.output and "zoho.project.default: project '1752587000000011111'" in (
        result.output
    )
    result = CliRunner().invoke(main, ["run"], env=env)
    assert result.exit_code == 0 and started == [True]


def test_send_test_without_a_mapping_says_what_to_do(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["send-test", "github", "--url", "http://127.0.0.1:1"], env=env)
    assert result.exit_code == 1
    assert "no github mapping in" in result.output
    assert "issue-bridge mappings init github --project <Zoho project id>" in result.output
    assert "mappings/examples/github.yaml" in result.output
    assert "nothing answers" not in result.output  # it never got as far as sending
