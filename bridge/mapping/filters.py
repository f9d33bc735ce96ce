"""`when:` filters: whether an item syncs at all, and what to do when that answer changes.

Both functions are pure: `matches` reads only the mapping and the event's fields, `transition` only the
answer now and the answer recorded on the item's link last time.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from bridge.sources import SOURCES

from ..events import NormalizedEvent
from .model import Condition, Mapping
from .template import to_text

# The field each source keeps its labels in (`label: bug`).
# `at_least` on `priority` without an `order:`: the source's own ranks, highest first.
PRIORITY_ORDERS = {
    "bugzilla": ("Highest", "P1", "High", "P2", "Normal", "P3", "Low", "P4", "Lowest", "P5"),
    "bugherd": ("critical", "important", "normal", "minor"),
}


def _norm(value: Any) -> str:
    return " ".join(to_text(value).split()).casefold()


def _values(value: Any) -> list[str]:
    items = list(value) if isinstance(value, list | tuple | set | frozenset) else [value]
    return [_norm(v) for v in items if v is not None and _norm(v)]


def _rank(order: tuple[str, ...], value: str) -> int | None:
    ranks = [_norm(v) for v in order]
    return ranks.index(value) if value in ranks else None


def evaluate(condition: Condition, source: str, fields: dict[str, Any]) -> tuple[bool, str]:
    """(whether `condition` holds for `fields`, why, in an administrator's words)."""
    if condition.kind in ("any", "all"):
        results = [evaluate(child, source, fields) for child in condition.children]
        if condition.kind == "all":
            failed = next((r for r in results if not r[0]), None)
            if failed is not None:
                return False, failed[1]
            return True, "; ".join(r[1] for r in results)
        passed = next((r for r in results if r[0]), None)
        if passed is not None:
            return True, passed[1]
        return False, "none of: " + "; ".join(r[1] for r in results)
    if condition.kind == "label":
        spec = SOURCES.get(source)
        field = condition.field or (spec.label_field if spec is not None else "labels")
        present = set(_values(fields.get(field)))
        found = [v for v in condition.values if _norm(v) in present]
        if found:
            return True, f"label '{found[0]}' present"
        wanted = ", ".join(f"'{v}'" for v in condition.values)
        return False, f"no label {wanted} in {field} ({', '.join(sorted(present)) or 'none'})"
    actual = _values(fields.get(condition.field))
    shown = ", ".join(actual) or "empty"
    name = condition.field
    if condition.kind in ("equals", "in"):
        hit = next((v for v in condition.values if _norm(v) in actual), None)
        if hit is not None:
            return True, f"{name} is '{hit}'"
        if condition.kind == "equals":
            return False, f"{name} is '{shown}', not '{condition.values[0]}'"
        return False, f"{name} is '{shown}', not one of {', '.join(condition.values)}"
    if condition.kind == "matches":
        hit = next((a for a in actual for p in condition.values if fnmatchcase(a, _norm(p))), None)
        if hit is not None:
            return True, f"{name} '{hit}' matches {', '.join(condition.values)}"
        return False, f"{name} '{shown}' does not match {', '.join(condition.values)}"
    if condition.kind == "at_least":
        order = condition.order or PRIORITY_ORDERS.get(source, ())
        threshold = _rank(order, _norm(condition.values[0]))
        ranks = [r for r in (_rank(order, a) for a in actual) if r is not None]
        if threshold is not None and ranks and min(ranks) <= threshold:
            return True, f"{name} '{shown}' is at least '{condition.values[0]}'"
        return False, f"{name} '{shown}' is below '{condition.values[0]}' (order: {', '.join(order)})"
    raise ValueError(f"unknown condition kind {condition.kind!r}")


def matches(mapping: Mapping, event: NormalizedEvent, known: dict[str, Any] | None = None) -> tuple[bool, str]:
    """Whether the item of `event` syncs under `mapping`, and why. `known`: its fields as last applied."""
    when = mapping.v3.when
    if when is None:
        return True, "no `when:` filter: every item syncs"
    fields = {**known, **event.fields} if known else event.fields
    return evaluate(when, event.source, fields)


# What the delivery core does with an item, given the filter's answer now and last time.
SYNC = "sync"  # matches, as before: create or update as usual
START = "start"  # matches now, not before (or never synced): create with its current state and past comments
SKIP = "skip"  # does not match and never synced: nothing is sent to Zoho
UNMATCH = "unmatch"  # stopped matching: apply `on_unmatch` once (`action` says how)
STILL_UNMATCHED = "still_unmatched"  # stopped matching earlier, on_unmatch already applied: nothing


@dataclass(frozen=True)
class Transition:
    kind: str
    action: str | None = None  # for UNMATCH: keep | close | comment
    reason: str = ""


def transition(mapping: Mapping, matched: bool, *, synced: bool, last_matched: bool | None) -> Transition:
    """`synced`: the item has a Zoho issue; `last_matched`: the answer recorded last time (None: never asked,
    which is every link made before filters existed, so it counts as matching)."""
    was = last_matched is not False
    if matched:
        if not synced:
            return Transition(START, reason="matches: created with its current state and past comments")
        if not was:
            return Transition(START, reason="matches again: brought up to date, past comments included")
        return Transition(SYNC)
    if not synced:
        return Transition(SKIP, reason="does not match the mapping's `when:`: not sent to Zoho")
    if was:
        return Transition(UNMATCH, action=mapping.v3.on_unmatch, reason=f"stopped matching: {mapping.v3.on_unmatch}")
    return Transition(STILL_UNMATCHED, reason="still does not match: nothing sent")


def unmatch_comment(event: NormalizedEvent, reason: str) -> str:
    """The Zoho comment `on_unmatch: comment` posts."""
    return (
        f"This {event.item_kind} no longer matches the bridge's filter ({reason}); "
        f"changes in {event.source} are no longer synced."
    )
