"""Every outside call, declared once: method, path template, where it is documented, whether it is safe to
repeat, which budgets it spends.

Each system's package holds its table (`bridge/targets/zoho/calls.py`, `bridge/sources/github/calls.py`, …);
its client asks the table before sending, and refuses a call the table does not declare. The test suite's
fakes check every request they receive against the same tables, so an undeclared call fails a test, and
`docs/calls.md` lists the tables (a test keeps it in step).

`safe`: repeating the call cannot change anything twice (a read, an idempotent PUT of the same body); only
safe calls are ever repeated after a lost answer. A create (an issue, a comment, a back-link) is never
blindly repeated: the journal makes it an operation in doubt, which its resolver looks up by the marker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_PARAM = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Call:
    name: str  # short and stable: "issue.create", "comments.list"
    method: str
    path: str  # template: "/api/v3/portal/{portal}/projects/{project}/issues/{issue}"
    documented: str  # "001:3590-3776", or the provider's public reference ("GitHub REST: Create an issue comment")
    safe: bool
    budgets: tuple[str, ...] = ()  # budget keys this call spends (bridge/outbound/budget.py)
    creates: bool = False  # makes content on the provider (GitHub paces these: secondary limits)
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = _PARAM.split(self.path)
        regex = "".join(re.escape(p) if i % 2 == 0 else "[^/]+" for i, p in enumerate(parts))
        object.__setattr__(self, "pattern", re.compile(f"^{regex}/?$"))

    def matches(self, method: str, path: str) -> bool:
        return method.upper() == self.method and bool(self.pattern.match(path.split("?", 1)[0]))


@dataclass(frozen=True)
class CallTable:
    system: str  # "zoho.projects", "zoho.bugtracker", "zoho.accounts", "github", "bugzilla", "bugherd"
    calls: tuple[Call, ...]

    def find(self, method: str, path: str) -> Call | None:
        """The declared call this request is, or None. `path` is relative to the system's API root."""
        for call in self.calls:
            if call.matches(method, path):
                return call
        return None

    def named(self, name: str) -> Call:
        for call in self.calls:
            if call.name == name:
                return call
        raise KeyError(f"{self.system}: no call named {name!r}")

    def lines(self) -> list[str]:
        """One line per call for docs/calls.md: call, where documented, safe to repeat, budget."""
        return [
            f"| `{c.method} {c.path}` | {c.name} | {c.documented} | {'yes' if c.safe else 'no'} | "
            f"{', '.join(c.budgets) or '-'} |"
            for c in self.calls
        ]
