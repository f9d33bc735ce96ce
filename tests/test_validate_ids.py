"""Ids in delivery bodies (bridge/sources/validate.py `check_id`): what is taken and what is refused, and how the
refusal names the problem (README, "What the bridge answers")."""

from __future__ import annotations

import pytest

from bridge.events import BadDelivery
from bridge.sources.validate import MAX_ID, check_id


@pytest.mark.parametrize(("value", "expected"), [(7, 7), ("654322", 654322), (" 12 ", 12), (MAX_ID, MAX_ID)])
def test_an_integer_or_text_of_ascii_digits_is_an_id(value, expected):
    assert check_id("bug.id", value) == expected


@pytest.mark.parametrize(
    ("value", "allow_text", "message"),
    [
        (True, True, "bug.id: expected an integer id, got a boolean"),
        ("12a", True, "bug.id: expected an id of ASCII digits, got '12a'"),
        ("١٢", True, "bug.id: expected an id of ASCII digits"),  # Arabic-Indic digits are digits, not ASCII
        ("1" * 25, True, "bug.id: id 1111111111111111111111111 is out of range (1 to 9223372036854775807)"),
        (0, True, "bug.id: id 0 is out of range"),
        (MAX_ID + 1, True, "is out of range"),
        ("13", False, "bug.id: expected an integer id, got str"),  # GitHub's ids are always JSON integers
        (1.5, True, "bug.id: expected an integer id, got float"),
    ],
)
def test_anything_else_is_refused_naming_the_problem(value, allow_text, message):
    with pytest.raises(BadDelivery) as refused:
        check_id("bug.id", value, allow_text=allow_text)
    assert message in refused.value.reason
