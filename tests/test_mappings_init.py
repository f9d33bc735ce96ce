"""`issue-bridge mappings init github|bugzilla|bugherd --project ID` against a fake portal whose option names are
not Zoho's defaults: the file uses the project's own names and the source's conventions, passes `mappings check`
(names and routes asked from Zoho), is never written over an existing file, and syncs an item end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge import store
from bridge.cli import main
from bridge.cli.mapping_init import pick, status_roles
from bridge.process.runtime import Runtime
from bridge.settings import load_settings
from bridge.sources.github.webhook import GitHubSource
from testkit.factories import issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import GITHUB_SECRET

PROJECT = "1752587000000098001"
PORTAL_OPTIONS = {
    "status": ["Triage", "Working on it", "Ready for QA", "Shipped", "Won't fix"],
    "severity": ["Sev 1 - Outage", "Sev 2 - Major", "Sev 3 - Minor", "Sev 4 - Cosmetic"],
    "classification": ["Defect", "Vulnerability", "Improvement", "New feature"],
    "module": ["None", "Storefront", "Payments API"],
    "priority": ["Urgent", "High", "Normal", "Low"],
}


@pytest.fixture
def fake():
    with FakeZoho(options=PORTAL_OPTIONS) as server:
        yield server


@pytest.fixture
def env(tmp_path: Path, fake: FakeZoho) -> dict[str, str]:
    (tmp_path / "mappings").mkdir()
    return {
        "BRIDGE_DATA_DIR": str(tmp_path / "var"),
        "MAPPINGS_DIR": str(tmp_path / "mappings"),
        "BROKER_URL": "redis://127.0.0.1:1/0",
        "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
        "ZOHO_API_BASE": fake.base_url,
        "ZOHO_ACCOUNTS_URL": fake.base_url,
        "ZOHO_CLIENT_ID": fake.client_id,
        "ZOHO_CLIENT_SECRET": fake.client_secret,
        "ZOHO_REFRESH_TOKEN": fake.refresh_token,
        "ZOHO_PORTAL_ID": fake.portal_id,
        "ZOHO_RATE_LIMIT_PER_MINUTE": "0",
        "COALESCE_MS": "0",
    }


def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


@pytest.mark.parametrize("source", ["github", "bugzilla", "bugherd"])
def test_init_writes_a_mapping_from_the_portals_own_names_that_passes_check(env: dict[str, str], source: str) -> None:
    code, output = _cli(env, "mappings", "init", source, "--project", PROJECT)
    assert code == 0, output
    written = Path(env["MAPPINGS_DIR"]) / f"{source}.yaml"
    text = written.read_text()
    assert "# Zoho statuses:        Triage, Working on it, Ready for QA, Shipped, Won't fix" in text
    assert f'default: "{PROJECT}"  # API' in text and "external_id_field: external_id" in text
    assert 'closed_status: "Shipped"' in text
    for default_name in ('"Open"', '"Closed"', '"Blocker"', '"Major"'):  # none of Zoho's stock names
        assert f": {default_name}" not in text, default_name
    code, output = _cli(env, "mappings", "check")
    assert code == 0 and "ok" in output, output
    # Never over an existing file, not even a hand-edited one.
    written.write_text(text + "# my edit\n")
    code, output = _cli(env, "mappings", "init", source, "--project", PROJECT)
    assert code == 1 and "exists: not overwritten" in output
    assert written.read_text().endswith("# my edit\n")


def test_the_written_github_mapping_syncs_an_item_end_to_end(env: dict[str, str], fake: FakeZoho) -> None:
    code, output = _cli(env, "mappings", "init", "github", "--project", PROJECT)
    assert code == 0, output
    text = (Path(env["MAPPINGS_DIR"]) / "github.yaml").read_text()
    assert '"severity:sev-1-outage": "Sev 1 - Outage"' in text and '"area:payments-api": "Payments API"' in text
    runtime = Runtime(load_settings(env))
    parser = GitHubSource(GITHUB_SECRET)
    labels = ("severity:sev-1-outage", "security", "area:payments-api")
    for n, action in enumerate(("opened", "closed"), 1):
        state = "open" if action == "opened" else "closed"
        payload = issues_event(action, number=7, labels=labels, state=state, updated=100.0 * n)
        body = json.dumps(payload).encode()
        event = parser.parse(body, {"X-GitHub-Event": "issues"})
        store.record_delivery(runtime.engine, event, dedup_key=f"d{n}", headers={}, payload=body)
        runtime.sync.process_item("github", event.item_key)
        [issue] = fake.issues(PROJECT)
        want = "Triage" if action == "opened" else "Shipped"
        assert issue["status"]["id"] == fake.option_id("status", want), (action, issue["status"])
    assert issue["severity"]["id"] == fake.option_id("severity", "Sev 1 - Outage")
    assert issue["classification"]["id"] == fake.option_id("classification", "Vulnerability")
    assert issue["module"]["id"] == fake.option_id("module", "Payments API")
    runtime.engine.dispose()


def test_init_needs_zoho_and_a_known_project(env: dict[str, str]) -> None:
    code, output = _cli(env, "mappings", "init", "github", "--project", "1752587000000011111")
    assert code == 1 and "project 1752587000000011111 is not in portal" in output and "(API)" in output
    dry = env | {"ZOHO_CLIENT_ID": "", "ZOHO_CLIENT_SECRET": "", "ZOHO_REFRESH_TOKEN": ""}
    code, output = _cli(dry, "mappings", "init", "github", "--project", PROJECT)
    assert code == 1 and "issue-bridge zoho connect" in output and "mappings/examples/github.yaml" in output
    assert not (Path(env["MAPPINGS_DIR"]) / "github.yaml").exists()


def test_names_are_matched_by_their_words() -> None:
    assert status_roles(["New", "Doing", "QA", "Done"]) == {
        "open": "New",
        "progress": "Doing",
        "testing": "QA",
        "reopened": "New",
        "closed": "Done",
    }
    assert status_roles(["Alpha", "Beta"])["closed"] == "Beta"  # no word fits: the first and last
    assert pick(["P1 - Drop everything", "P2"], ["p1"]) == "P1 - Drop everything"
    assert pick(["Bug", "Debug tooling"], ["bug"]) == "Bug"  # an exact name before one containing the word
