"""`docs/calls.md`: one line per declared outside call of every system, generated from the call tables.

    python -m bridge.outbound.docs > docs/calls.md

`tests/test_call_tables.py` fails when the file and the tables differ.
"""

from __future__ import annotations

from bridge.outbound.calls import CallTable


def all_tables() -> list[CallTable]:
    """Every system's call table, in the order the document lists them."""
    from bridge.sources import SOURCES
    from bridge.targets.zoho.calls import ACCOUNTS, BUGTRACKER, PROJECTS

    return [
        PROJECTS,
        BUGTRACKER,
        ACCOUNTS,
        *(spec.load(spec.call_table) for spec in SOURCES.values() if spec.call_table),
    ]


HEADER = """# Every outside call the bridge makes

Generated from the call tables (`bridge/targets/zoho/calls.py`, `bridge/sources/*/calls.py`) by
`python -m bridge.outbound.docs > docs/calls.md`; a test fails when this file and the tables differ.
A call no table declares is never sent, and the test suite fails when a fake receives one.

Columns: the call (method and path under the system's API root), its name in the table, where it is
documented (seed file and lines: 000 Zoho BugTracker, 001 Zoho Projects v3, 002 BugHerd, 003 Bugzilla; GitHub
by its public REST reference), whether it is safe to repeat after a lost answer (only those are ever
repeated; a create is looked up by its marker instead), and the shared budgets it spends
(`bridge/outbound/budget.py`).
"""


def render() -> str:
    parts = [HEADER]
    for table in all_tables():
        parts.append(f"\n## {table.system}\n\n| call | name | documented | safe to repeat | budgets |\n")
        parts.append("| --- | --- | --- | --- | --- |\n")
        parts.extend(line + "\n" for line in table.lines())
    return "".join(parts)


if __name__ == "__main__":
    print(render(), end="")
