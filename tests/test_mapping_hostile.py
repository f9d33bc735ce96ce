"""Issue 22, hostile mapping files: alias bombs, floods of aliases, oversized and deeply nested documents are
refused in milliseconds with file and line (bounds checked before anything is expanded), the last good version
stays in force, and an anonymous `/readyz` cannot make the web process re-read its mappings per request."""

from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path

import pytest

from bridge.mapping import MappingError, MappingRegistry, load_mapping
from bridge.mapping.loader import MAX_ALIASES, MAX_MAPPING_BYTES
from bridge.settings import load_settings
from bridge.sources import KNOWN_FIELDS
from bridge.web import create_app, health
from testkit.harness import GITHUB_SECRET, REPO

EXAMPLE = REPO / "mappings" / "examples" / "github.yaml"


def billion_laughs(levels: int = 9) -> str:
    """The classic: each level lists the previous one nine times (a few hundred bytes, 9**levels values)."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in itertools.pairwise("abcdefghijklmnop"[: levels + 1]):
        lines.append(f"{name}: &{name} [{','.join(f'*{prev}' for _ in range(9))}]")
    return "\n".join(lines) + "\n"


def _refused_quickly(path: Path) -> MappingError:
    started = time.process_time()  # CPU, not wall: a loaded machine must not fail it; the bombs cost 14-93 s
    with pytest.raises(MappingError) as caught:
        load_mapping(path, known_fields=KNOWN_FIELDS)
    assert time.process_time() - started < 2.0
    return caught.value


def test_an_alias_bomb_is_refused_before_expansion_with_its_line(tmp_path: Path) -> None:
    bomb = tmp_path / "github.yaml"
    bomb.write_text(billion_laughs())
    assert len(bomb.read_bytes()) < 500
    [problem] = _refused_quickly(bomb).problems
    assert problem.file == str(bomb) and problem.line == 5  # `e:` is the first level past the bound
    assert "expand to more than" in problem.message and "refused before expanding" in problem.message


def test_too_many_aliases_are_refused_at_the_first_one_over(tmp_path: Path) -> None:
    flood = tmp_path / "github.yaml"
    flood.write_text("x: &x 1\nlist:\n" + "".join(f"  - *x  # {i}\n" for i in range(MAX_ALIASES + 5)))
    [problem] = _refused_quickly(flood).problems
    assert problem.line == 3 + MAX_ALIASES and f"more than {MAX_ALIASES} YAML aliases" in problem.message


def test_an_oversized_or_deeply_nested_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text(EXAMPLE.read_text() + "#" * (MAX_MAPPING_BYTES + 1) + "\n")
    [problem] = _refused_quickly(big).problems
    assert "larger than 256 KiB" in problem.message and problem.file == str(big)
    deep = tmp_path / "deep.yaml"
    deep.write_text("source: github\nx: " + "[" * 20_000 + "]" * 20_000 + "\n")
    problems = _refused_quickly(deep).problems
    assert problems and all(str(deep) in str(p) for p in problems)


def test_a_few_aliases_sharing_a_map_still_load(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace(
        'map: {"severity:blocker": Blocker, "severity:critical": Critical, bug: Major}',
        'map: &severities {"severity:blocker": Blocker, "severity:critical": Critical, bug: Major}',
    )
    text = text.replace("\ncomments: true", "  priority:\n    from: labels\n    map: *severities\n\ncomments: true", 1)
    shared = tmp_path / "github.yaml"
    shared.write_text(text)
    mapping = load_mapping(shared, known_fields=KNOWN_FIELDS)
    assert dict(mapping.value_maps)["priority"].entries == dict(mapping.value_maps)["severity"].entries


def test_a_bomb_edit_keeps_the_last_good_version_in_force(tmp_path: Path) -> None:
    folder = tmp_path / "mappings"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder / "github.yaml")
    registry = MappingRegistry(folder, known_fields=KNOWN_FIELDS)
    assert [m.name for m in registry.all()] == ["github"]
    (folder / "github.yaml").write_text(billion_laughs())
    started = time.perf_counter()
    problems = registry.reload_if_changed()
    assert time.perf_counter() - started < 1.0
    assert problems and problems[0].line == 5
    assert [m.name for m in registry.all()] == ["github"]  # the last good version stays


def test_readyz_does_not_reload_the_mappings_per_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "MAPPINGS_RECHECK_SECONDS", 3600.0)  # this test's requests all fall in one interval
    folder = tmp_path / "mappings"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder / "github.yaml")
    env = {
        "BRIDGE_DATA_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path}/b.db",
        "BROKER_URL": "redis://127.0.0.1:1/0",
        "MAPPINGS_DIR": str(folder),
        "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
    }
    app = create_app(load_settings(env))
    client = app.test_client()
    assert client.get("/readyz").get_json()["checks"]["mappings"] is True
    (folder / "github.yaml").write_text("source: [broken\n")
    for _ in range(2):  # anonymous requests: at most one look at the files per interval, here none
        assert client.get("/readyz").get_json()["checks"]["mappings"] is True
    app.extensions["bridge"].registry.reload_if_changed()  # what the next interval (or a worker) does
    assert client.get("/readyz").get_json()["checks"]["mappings"] is False
    app.extensions["bridge"].engine.dispose()
