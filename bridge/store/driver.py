"""The worker's statements run on the driver's cursor, each compiled once.

`Connection.execute` costs ~75 µs of Python per statement on top of the driver (an execution context, events,
a cursor result), more than SQLite's own work on most of the worker's statements: a new issue runs about 25 of
them, a third of the worker's CPU and of its time holding SQLite's write lock (docs/benchmarks.md). `run` keeps
what SQLAlchemy does that matters here and skips the rest:

- the SQL: compiled once per statement shape and dialect (SQLAlchemy's cache key, so a statement built per
  call with other values finds the same entry), its parameters made the way SQLAlchemy makes them (extracted
  literals, expanding `IN` lists, bind processors, the driver's parameter style);
- the rows: tuples with the column names as attributes (`row.name`, `row[0]`), through the types' result
  processors;
- the transaction: a connection not in one begins it as SQLAlchemy's autobegin would (our SQLite `BEGIN`);
- errors: raised as SQLAlchemy raises them (`OperationalError` for a locked database, a lost PostgreSQL
  connection invalidated), through the connection's own handler;
- `before_cursor_execute` listeners still see every statement (the benchmarks count with them; tests read plans).

A statement this cannot run as a plain execute (literal-rendered parameters, Python-side column defaults, values
set with `.params()`, no cache key) goes through `Connection.execute` and answers the same way.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import MultipleResultsFound, NoResultFound
from sqlalchemy.sql.base import Executable

_MAX_ENTRIES = 2000  # statement shapes kept per process (the worker's are a few dozen)


class Rows:
    """A statement's rows (all fetched) and the count of rows it changed, with `Result`'s common readers."""

    __slots__ = ("rowcount", "rows")

    def __init__(self, rows: Sequence[Any], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)

    def all(self) -> list[Any]:
        return list(self.rows)

    def first(self) -> Any:
        return self.rows[0] if self.rows else None

    def one(self) -> Any:
        if not self.rows:
            raise NoResultFound("No row was found when one was required")
        return self.one_or_none()

    def one_or_none(self) -> Any:
        if len(self.rows) > 1:
            raise MultipleResultsFound("Multiple rows were found when one or none was required")
        return self.rows[0] if self.rows else None

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalars(self) -> list[Any]:
        return [row[0] for row in self.rows]


@dataclass
class _Prepared:
    sql: str
    positions: tuple[str, ...] | None  # positional drivers (SQLite): parameter names in order
    escaped: Mapping[str, str]  # named drivers (psycopg): names the driver sees, where they differ
    binds: Mapping[str, Callable[[Any], Any]]  # bind processors by parameter name
    compiled: Any
    expanding: bool  # `IN` lists rendered per call (one placeholder per value)
    # (row factory, result processors or ()): made at the first run that returns rows (the cursor names the
    # columns), and set in one assignment so another thread never sees the factory without its processors
    reader: tuple[Callable[..., Any], tuple[Callable[[Any], Any] | None, ...]] | None = None


_prepared: dict[tuple[str, Any], _Prepared | None] = {}


def _prepare(conn: Connection, statement: Executable, params: Mapping[str, Any] | None) -> tuple[_Prepared | None, Any]:
    cache_key = statement._generate_cache_key()  # type: ignore[attr-defined]  # memoized on a built statement
    if cache_key is None or getattr(cache_key, "params", None):  # `.params()` values: left to `execute`
        return None, None
    # An INSERT or UPDATE without values of its own sets the columns it is given: the keys are part of its SQL.
    keys = tuple(sorted(params)) if params else ()
    key = (conn.dialect.name, cache_key.key, keys)
    try:
        return _prepared[key], cache_key
    except KeyError:
        pass
    compiled = statement.compile(dialect=conn.dialect, column_keys=list(keys), cache_key=cache_key)  # type: ignore[attr-defined]
    plain = not (
        compiled.literal_execute_params
        or getattr(compiled, "insert_prefetch", None)
        or getattr(compiled, "update_prefetch", None)
        or compiled.schema_translate_map
    )
    prepared = (
        _Prepared(
            sql=compiled.string,
            positions=tuple(compiled.positiontup) if compiled.positional else None,
            escaped=dict(compiled.escaped_bind_names or {}),
            binds=dict(compiled._bind_processors),
            compiled=compiled,
            expanding=bool(compiled.post_compile_params),
        )
        if plain
        else None
    )
    if len(_prepared) >= _MAX_ENTRIES:
        _prepared.clear()
    _prepared[key] = prepared
    return prepared, cache_key


def _reader(conn: Connection, prepared: _Prepared, description: Sequence[Any]) -> tuple[Callable[..., Any], Any]:
    names = [str(d[0]) for d in description]
    make = collections.namedtuple("Row", names, rename=True)._make  # type: ignore[misc,attr-defined]
    results: tuple[Callable[[Any], Any] | None, ...] = ()
    columns = prepared.compiled._result_columns
    if len(columns) == len(description):
        pairs = zip(columns, description, strict=True)
        results = tuple(column[3]._cached_result_processor(conn.dialect, d[1]) for column, d in pairs)
    prepared.reader = make, results if any(results) else ()
    return prepared.reader


def _driver_params(prepared: _Prepared, cache_key: Any, params: Mapping[str, Any] | None) -> tuple[str, Any]:
    """The SQL and the driver's parameters for one parameter set, as SQLAlchemy's execution context makes them."""
    values = prepared.compiled.construct_params(params, escape_names=False, extracted_parameters=cache_key.bindparams)
    binds, positions, sql = prepared.binds, prepared.positions, prepared.sql
    if prepared.expanding:
        expanded = prepared.compiled._process_parameters_for_postcompile(values)
        binds, positions, sql = {**binds, **expanded.processors}, expanded.positiontup, expanded.statement
        values = expanded.parameters
    if positions is not None:
        return sql, tuple(binds[k](values[k]) if k in binds else values[k] for k in positions)
    escaped = prepared.escaped
    return sql, {escaped.get(k, k): binds[k](v) if k in binds else v for k, v in values.items()}


def _execute(conn: Connection, sql: str, driver_params: Any, many: bool) -> tuple[Any, Any, int]:
    """Run on the connection's driver cursor: (description, rows, rowcount)."""
    if not conn.in_transaction():
        conn.begin()  # what SQLAlchemy's autobegin does: one transaction until commit / close
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if conn._has_events or conn.engine._has_events:
            for listener in conn.dispatch.before_cursor_execute:
                sql, driver_params = listener(conn, cursor, sql, driver_params, None, many)
        if many:
            cursor.executemany(sql, driver_params)
            return None, [], cursor.rowcount
        cursor.execute(sql, driver_params)
        description = cursor.description
        return description, cursor.fetchall() if description else [], cursor.rowcount
    except Exception as exc:
        conn._handle_dbapi_exception(exc, sql, driver_params, cursor, None)  # raises SQLAlchemy's error
        raise
    finally:
        cursor.close()


def run(conn: Connection, statement: Executable, params: Mapping[str, Any] | None = None) -> Rows:
    """Execute one statement with one set of parameters; its rows are read at once."""
    prepared, cache_key = _prepare(conn, statement, params)
    if prepared is None:
        result = conn.execute(statement, params)  # type: ignore[call-overload]
        return Rows(result.all() if result.returns_rows else [], result.rowcount)
    try:
        sql, driver_params = _driver_params(prepared, cache_key, params)
    except Exception as exc:  # a missing or unbindable parameter: SQLAlchemy's StatementError, as execute raises it
        conn._handle_dbapi_exception(exc, prepared.sql, params, None, None)
        raise
    description, raw, rowcount = _execute(conn, sql, driver_params, False)
    if not description:
        return Rows([], rowcount)
    make, procs = prepared.reader or _reader(conn, prepared, description)
    if procs:
        return Rows([make([p(v) if p else v for p, v in zip(procs, r, strict=True)]) for r in raw], rowcount)
    return Rows([make(r) for r in raw], rowcount)


def run_many(conn: Connection, statement: Executable, rows: Sequence[Mapping[str, Any]]) -> None:
    """Execute a statement that returns nothing once per parameter set (the same keys in each), in one call."""
    if not rows:
        return
    prepared, cache_key = _prepare(conn, statement, rows[0])
    if prepared is None or prepared.expanding:
        conn.execute(statement, list(rows))
        return
    try:
        made = [_driver_params(prepared, cache_key, row) for row in rows]
    except Exception as exc:
        conn._handle_dbapi_exception(exc, prepared.sql, list(rows), None, None)
        raise
    _execute(conn, made[0][0], [params for _, params in made], True)
