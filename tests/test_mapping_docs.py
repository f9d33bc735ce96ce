"""Every complete example in docs/mappings.md is a valid mapping file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.mapping import load_mapping
from bridge.sources import KNOWN_FIELDS

DOC = Path(__file__).resolve().parent.parent / "docs" / "mappings.md"
EXAMPLES = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_there_is_an_example_per_source():
    assert sorted(re.search(r"^source: (\w+)", e, flags=re.M).group(1) for e in EXAMPLES) == [
        "bugherd",
        "bugzilla",
        "github",
    ]


@pytest.mark.parametrize("text", EXAMPLES)
def test_doc_example_loads(tmp_path, text):
    path = tmp_path / "example.yaml"
    path.write_text(text, encoding="utf-8")
    assert load_mapping(path, known_fields=KNOWN_FIELDS).source in KNOWN_FIELDS
