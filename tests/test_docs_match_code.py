"""The documents say what the code does, and this test keeps them so: settings in `.env.example` and in the code,
once each; every `issue-bridge …` command in README and docs/ exists; every mapping key is documented in
docs/mappings.md; no `bridge …` command (iproute2's name) in the docs; the OAuth scopes of the README are the
ones `zoho connect` asks for; the claims issue 22 found wrong stay corrected."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from marshmallow import Schema, fields

from bridge.cli import main
from bridge.mapping.schema import MappingSchema
from bridge.mapping.talkback import BacklinkSchema, ReverseSchema
from bridge.targets.zoho.grant import ATTACHMENT_SCOPES, SCOPES

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]{2,}$")
ENV_READERS = {"get", "getenv", "_int", "_float", "_positive", "_port", "_url", "_share", "_networks", "pop"}


def _settings_in_code() -> set[str]:
    """Every environment variable the code reads: `env.get("X")`, `os.environ["X"]`, `_int(env, "X", …)` …"""
    found: set[str] = set()
    for path in [*(REPO / "bridge").rglob("*.py"), *(REPO / "workers").rglob("*.py")]:
        if path.name == "proxy.py":  # a WSGI middleware: its `environ` is the request's (HTTP_HOST, REMOTE_ADDR)
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name in ENV_READERS:
                    found |= {a.value for a in node.args[:2] if isinstance(a, ast.Constant) and _env(a.value)}
            elif isinstance(node, ast.Subscript) and "environ" in ast.unparse(node.value):
                if isinstance(node.slice, ast.Constant) and _env(node.slice.value):
                    found.add(node.slice.value)
            elif isinstance(node, ast.Tuple) and path.name == "settings.py":  # names read in a loop: `for n in (…)`
                names = [e.value for e in node.elts if isinstance(e, ast.Constant)]
                if len(names) > 1 and len(names) == len(node.elts) and all(_env(n) and "_" in n for n in names):
                    found |= set(names)
    return found


# Variables other programs own, read as they document them (not the bridge's settings).
NOT_OURS = {"MP_LOG"}  # billiard's (Celery's pool): its multiprocessing log
# A WSGI request's environ (bridge/web/intake.py reads it), not the process's environment (PEP 3333).
NOT_OURS |= {"REQUEST_METHOD", "PATH_INFO", "SCRIPT_NAME", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH"}


def _env(value: object) -> bool:
    return isinstance(value, str) and bool(ENV_NAME.match(value)) and value not in NOT_OURS


def test_every_setting_is_in_env_example_once_and_in_the_code() -> None:
    listed = Counter(
        m.group(1)
        for line in (REPO / ".env.example").read_text().splitlines()
        if (m := re.match(r"^#?\s*([A-Z][A-Z0-9_]{2,})=", line))
    )
    assert [name for name, n in listed.items() if n > 1] == []
    in_code = _settings_in_code()
    assert sorted(set(listed) - in_code) == [], "in .env.example, read by no code"
    assert sorted(in_code - set(listed)) == [], "read by the code, missing from .env.example"


def _commands(text: str) -> list[list[str]]:
    """`issue-bridge a b …` in inline code and code blocks: the words up to the first option or placeholder."""
    spans = re.findall(r"```.*?```", text, flags=re.S) + re.findall(r"`([^`\n]+)`", text)
    found = []
    for span in spans:
        for match in re.finditer(r"(?<![\w/.-])issue-bridge((?:[ \t]+[a-z][a-z0-9|-]*)+)", span):
            found.append(match.group(1).split())
    return found


def _resolve(words: list[str]) -> list[str] | str:
    """The command path the words name (click groups followed), or why they name none."""
    command: click.Command = main
    path: list[str] = []
    for word in words:
        if not isinstance(command, click.Group):
            break
        with click.Context(command) as ctx:
            sub = command.get_command(ctx, word.split("|")[0])
        if sub is None:
            return f"no command {' '.join([*path, word])!r}"
        for alternative in word.split("|")[1:]:
            with click.Context(command) as ctx:
                if command.get_command(ctx, alternative) is None:
                    return f"no command {' '.join([*path, alternative])!r}"
        command, path = sub, [*path, word.split("|")[0]]
    return path


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_command_in_the_docs_exists(doc: Path) -> None:
    problems, paths = [], set()
    for words in _commands(doc.read_text(encoding="utf-8")):
        resolved = _resolve(words)
        if isinstance(resolved, str):
            problems.append(f"{' '.join(words)}: {resolved}")
        elif resolved:
            paths.add(tuple(resolved))
    assert problems == []
    for path in sorted(paths):
        result = CliRunner().invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)


def test_no_bridge_command_in_the_docs() -> None:
    """`bridge` is iproute2's on most Linux systems: the docs name `issue-bridge` (one README line says why)."""
    commands = "|".join(main.commands)
    pattern = re.compile(rf"(?:^|[`$\s])bridge (?:{commands})\b")
    found = [
        f"{doc.name}:{n}: {line.strip()}"
        for doc in DOCS
        for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line) and "iproute2" not in line
    ]
    assert found == []


def _keys(schema: Schema, prefix: str = "") -> list[str]:
    keys = []
    for name, field in schema.fields.items():
        key = field.data_key or name
        keys.append(prefix + key)
        if isinstance(field, fields.Nested) and isinstance(field.schema, Schema):
            keys += _keys(field.schema, f"{prefix}{key}.")
    return keys


def test_every_mapping_key_is_documented() -> None:
    text = (REPO / "docs" / "mappings.md").read_text(encoding="utf-8")
    keys = _keys(MappingSchema()) + _keys(BacklinkSchema(), "backlink.") + _keys(ReverseSchema(), "reverse.")
    assert {"backlink", "reverse", "conflict", "backlink.via", "reverse.comments"} <= set(keys)
    missing = [k for k in keys if not re.search(rf"(`|\b){re.escape(k.rpartition('.')[2])}(`|:)", text)]
    assert missing == []
    for section in ("backlink", "reverse", "conflict"):
        assert re.search(rf"^#+ .*`{section}`", text, flags=re.M), f"docs/mappings.md has no section for {section}"


def test_readme_scopes_are_the_ones_zoho_connect_asks_for() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for dialect, scopes in SCOPES.items():
        [row] = [line for line in readme.splitlines() if line.strip().startswith(f"| `{dialect}`")]
        base, _, upload = row.partition("attachments: true")
        listed = re.findall(r"`(Zoho[A-Za-z]+\.[a-z_]+\.[A-Z]+)`", base)
        optional = re.findall(r"add `([^`]+)` only", row)
        assert [s for s in listed if s not in optional] == list(scopes), dialect
        upload_scopes = re.findall(r"`((?:Zoho[A-Za-z]+|WorkDrive)\.[a-z_]+\.[A-Z]+)`", upload.split("add `")[0])
        assert upload_scopes == list(ATTACHMENT_SCOPES[dialect]), dialect


def test_the_claims_issue_22_found_wrong_stay_corrected() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "lookup + create" not in readme and "a lookup and a create" not in readme
    assert "issue-bridge bugherd register-webhooks" in readme
    assert "a new issue costs 1 call" in readme
