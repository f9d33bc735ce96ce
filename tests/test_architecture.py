"""The folder list is the architecture (docs/architecture.md): checked on the code itself.

- No import cycle between the bridge's modules, counting imports inside functions too (a deferred import is
  still a dependency); only `if TYPE_CHECKING:` blocks are left out (they name a type, never run).
- Only the store builds SQL (`test_only_the_store_builds_sql`).
- Only a source's package names it: the rest reads the `SOURCES` registry (`test_only_a_sources_package_names_it`).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("bridge", "workers")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in ROOTS:
        for path in (REPO / root).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    def resolve(name: str) -> str | None:
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            if (candidate := ".".join(parts[:i])) in modules:
                return candidate
        return None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = _type_checking_lines(tree)
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in typing_only:
                continue
            targets: list[str | None] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from bridge.store import journal` depends on the submodule, `… import PENDING` on the package
                targets = [resolve(f"{node.module}.{a.name}") or resolve(node.module) for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [resolve(a.name) for a in node.names]
            graph[name].update(t for t in targets if t and t != name and t.split(".")[0] in ROOTS)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_the_bridges_modules() -> None:
    assert _cycles(_imports(_modules())) == []


def test_the_cycle_finder_finds_a_deferred_import_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


# -- only a source's package names it -------------------------------------------------------------------------------


def _source_packages() -> set[str]:
    return {f"bridge.sources.{p.name}" for p in (REPO / "bridge" / "sources").iterdir() if (p / "__init__.py").exists()}


def test_only_a_sources_package_names_it() -> None:
    """The core, the CLI, the web, the store, the processes and the tasks reach a source through its `SourceSpec`
    (`bridge/sources/__init__.py` `SOURCES`), never by importing its package: adding a source is its package and
    one registry line. The registry is the one module that imports them all."""
    packages = _source_packages()
    assert {"bridge.sources.github", "bridge.sources.bugzilla", "bridge.sources.bugherd"} <= packages
    graph = _imports(_modules())
    naming = {
        module: sorted(t for t in targets if any(t == p or t.startswith(p + ".") for p in packages))
        for module, targets in graph.items()
        if module != "bridge.sources" and not any(module == p or module.startswith(p + ".") for p in packages)
    }
    assert {module: found for module, found in naming.items() if found} == {}


# -- only the store builds SQL ---------------------------------------------------------------------------------------

STORE_PARTS = (("bridge", "store"), ("bridge", "migrations"))
# What a module outside the store may import from SQLAlchemy, and why: nothing here can build or run a statement.
SQLALCHEMY_ALLOWED: dict[str, frozenset[str] | None] = {
    # The handles a caller passes to the store's functions (type hints, and runtime/process wiring that holds
    # an Engine); no `make_url`, `create_engine`, `text`, `Row`: those are the store's (schema.py).
    "sqlalchemy.engine": frozenset({"Connection", "Engine"}),
    # Exceptions (None: any name): the web answers 503 on a lost database, the admin guard retries a lost
    # insert race (IntegrityError); catching an error runs no SQL.
    "sqlalchemy.exc": None,
}
# Outside the store, the schema module is for these (making and checking the database), and its tables may be
# passed along (sources/validate.py reads column lengths), never used to build a statement:
SCHEMA_FUNCTIONS = frozenset({"make_engine", "ensure_schema", "check_database", "shown_url"})
TABLE_BUILDERS = frozenset({"c", "columns", "select", "insert", "update", "delete", "join", "outerjoin", "alias"})
# Running a statement, or reaching under SQLAlchemy to the driver (raw SQL would pass every import check):
# the store's methods. Outside it, no code calls them on anything.
STATEMENT_RUNNERS = frozenset(
    {"execute", "exec_driver_sql", "scalar", "scalars", "scalar_one", "raw_connection", "driver_connection"}
)


def _sql_outside_the_store(source: str) -> list[str]:
    """Where this module's code builds SQL or imports what builds it (line: what)."""
    tree = ast.parse(source)
    found: list[str] = []
    schema_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "sqlalchemy" or alias.name.startswith("sqlalchemy."):
                    found.append(f"{node.lineno}: import {alias.name}")
                if alias.name == "bridge.store.schema" and alias.asname:
                    schema_aliases.add(alias.asname)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            module = node.module
            if module == "sqlalchemy" or module.startswith("sqlalchemy."):
                allowed = SQLALCHEMY_ALLOWED.get(module, frozenset())
                for alias in node.names:
                    if allowed is not None and alias.name not in allowed:
                        found.append(f"{node.lineno}: from {module} import {alias.name}")
            elif module == "bridge.store":
                schema_aliases.update(a.asname or a.name for a in node.names if a.name == "schema")
            elif module == "bridge.store.schema":
                found += [
                    f"{node.lineno}: from bridge.store.schema import {a.name}"
                    for a in node.names
                    if a.name not in SCHEMA_FUNCTIONS
                ]
    for node in ast.walk(tree):
        # `db.events.c.id`, `db.kv.update()`: a table of the schema used to build a statement
        if (
            isinstance(node, ast.Attribute)
            and node.attr in TABLE_BUILDERS
            and isinstance(node.value, ast.Attribute)
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id in schema_aliases
        ):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Attribute) and node.attr in STATEMENT_RUNNERS:
            found.append(f"{node.lineno}: .{node.attr}")
    return sorted(found, key=lambda line: int(line.split(":")[0]))


def test_only_the_store_builds_sql() -> None:
    """bridge/store is the only place with SQL (docs/architecture.md): outside it (and the migrations), no module
    imports from SQLAlchemy anything but `sqlalchemy.engine.Connection/Engine` (handles passed to the store) and
    `sqlalchemy.exc` (exceptions caught), none uses a schema table to build a statement, and none runs one
    (`execute`, `exec_driver_sql`, `raw_connection`: raw SQL would pass the import checks). testkit/ and bench/
    are not the bridge: their fixtures set rows up directly."""
    problems = {
        name: found
        for name, path in sorted(_modules().items())
        if path.relative_to(REPO).parts[:2] not in STORE_PARTS
        and (found := _sql_outside_the_store(path.read_text(encoding="utf-8")))
    }
    assert problems == {}


def test_the_sql_check_finds_what_builds_sql() -> None:
    source = """
from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError
from bridge.store import schema as db
from bridge.store.schema import make_engine, events
import sqlalchemy

def f(conn: Connection):
    conn.execute(db.kv.update().values(value="1"))
    return db.make_engine, db.events.c.id, len(db.events.name)

def g(engine):
    engine.raw_connection().cursor().execute("DELETE FROM events")
    return engine.connect().exec_driver_sql("SELECT 1")
"""
    assert _sql_outside_the_store(source) == [
        "2: from sqlalchemy import select",
        "3: from sqlalchemy.engine import make_url",
        "6: from bridge.store.schema import events",
        "7: import sqlalchemy",
        "10: .execute",
        "10: db.kv.update",
        "11: db.events.c",
        "14: .execute",
        "14: .raw_connection",
        "15: .exec_driver_sql",
    ]
