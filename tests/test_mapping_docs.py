"""Every complete example in docs/mappings.md is a valid mapping file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.mapping import load_mapping
from bridge.sources import KNOWN_FIELDS

DOC = Path(__file__).resolve().parent.parent / "docs" / "mappings.md"
EXAMPLES = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_there_is_an_example_per_source_and_a_v3_one_per_source():
    sources = [re.search(r"^source: (\w+)", e, flags=re.M).group(1) for e in EXAMPLES]
    assert sorted(set(sources)) == ["bugherd", "bugzilla", "github"]
    v3 = [s for s, e in zip(sources, EXAMPLES, strict=True) if "when:" in e and "attachments: true" in e]
    assert sorted(v3) == ["bugherd", "bugzilla", "github"]


@pytest.mark.parametrize("text", EXAMPLES)
def test_doc_example_loads(tmp_path, text):
    # The v3 Bugzilla example names a shared users file, shown beside it in the document.
    (tmp_path / "users.yaml").write_text("users:\n  jdoe@mozilla.example: john.doe@corp.example\n", encoding="utf-8")
    path = tmp_path / "example.yaml"
    path.write_text(text, encoding="utf-8")
    assert load_mapping(path, known_fields=KNOWN_FIELDS).source in KNOWN_FIELDS
