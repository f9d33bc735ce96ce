"""`store.driver.run`: the worker's statements on the driver's cursor answer what `Connection.execute` answers,
raise what it raises, and are seen by the same listeners, on both databases."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import bindparam, event, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError, MultipleResultsFound, NoResultFound, OperationalError, StatementError

from bridge.store import schema as db
from bridge.store.driver import run, run_many
from testkit import dbs
from testkit.dbs import deliver, engine  # noqa: F401  (the fixture)

E = db.events


def _as_tuples(rows) -> list[tuple]:  # type: ignore[no-untyped-def]
    return [tuple(r) for r in rows]


def test_reads_answer_as_sqlalchemy_does(engine) -> None:  # noqa: F811
    ids = [deliver(engine, n) for n in (1, 2, 3)]
    statements = [
        (select(E.c.id, E.c.item_key, E.c.status).order_by(E.c.id), None),
        (select(E.c.id).where(E.c.item_key == bindparam("k")), {"k": "acme/web#2"}),
        (select(E.c.id).where(E.c.id.in_(bindparam("ids", expanding=True))).order_by(E.c.id), {"ids": ids[:2]}),
        (select(E.c.id).where(E.c.id.in_(bindparam("ids", expanding=True))), {"ids": []}),
        (select(func.count().label("n"), func.max(E.c.id).label("top")), None),
        (select(E.c.id).where(E.c.item_key == "acme/web#3").limit(1), None),  # a literal, extracted per statement
        (text("SELECT id, source FROM events WHERE id = :id"), {"id": ids[0]}),
    ]
    with engine.connect() as conn:
        for statement, params in statements:
            expected = conn.execute(statement, params).all()
            got = run(conn, statement, params)
            assert _as_tuples(got) == _as_tuples(expected), statement
            if expected:
                assert got.first()._fields == tuple(expected[0]._fields)
        # the same shape built again with another literal finds the compiled entry and binds the new value
        for n in (1, 2, 3):
            again = select(E.c.id).where(E.c.item_key == f"acme/web#{n}").limit(1)
            assert run(conn, again).scalar() == ids[n - 1]
    row = None
    with engine.connect() as conn:
        row = run(conn, select(E.c.id.label("event"), E.c.status).where(E.c.id == ids[1])).one()
    assert (row.event, row.status, row[0]) == (ids[1], "pending", ids[1])
    with engine.connect() as conn, pytest.raises(NoResultFound):  # what SQLAlchemy's `one()` raises
        run(conn, select(E.c.id).where(E.c.id == -1)).one()
    with engine.connect() as conn, pytest.raises(MultipleResultsFound):
        run(conn, select(E.c.id)).one_or_none()


def test_writes_change_what_they_say(engine) -> None:  # noqa: F811
    first = deliver(engine, 1)
    with engine.begin() as conn:
        changed = run(conn, update(E).where(E.c.id == bindparam("b_id")).values(notes="seen"), {"b_id": first})
        assert changed.rowcount == 1
        returned = run(
            conn,
            update(E).where(E.c.id == bindparam("b_id")).values(attempts=E.c.attempts + 1).returning(E.c.attempts),
            {"b_id": first},
        ).scalar_one()
        assert returned == 1
    with engine.connect() as conn:
        assert conn.execute(select(E.c.notes, E.c.attempts).where(E.c.id == first)).one() == ("seen", 1)


def test_an_insert_without_values_sets_the_columns_it_is_given(engine) -> None:  # noqa: F811
    """The keys given are part of the SQL: a second set of keys is not run with the first one's statement."""
    t = db.comment_links
    statement = insert(t)
    base = {"source": "github", "external_id": "x", "state": "done", "last_ts": 1.0, "updated_at": 2.0}
    with engine.begin() as conn:
        run(conn, statement, {**base, "comment_id": "1"})
        run(conn, statement, {**base, "comment_id": "2", "zoho_comment_id": "z2", "body_hash": "h"})
    with engine.connect() as conn:
        rows = conn.execute(select(t.c.comment_id, t.c.zoho_comment_id, t.c.body_hash).order_by(t.c.comment_id)).all()
    assert _as_tuples(rows) == [("1", None, None), ("2", "z2", "h")]


def test_many_rows_in_one_call(engine) -> None:  # noqa: F811
    t = db.metric_deltas
    rows = [{"name": f"n{i}", "labels": "{}", "value": float(i)} for i in range(5)]
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    with engine.begin() as conn:
        run_many(conn, insert(t), rows)
    with engine.connect() as conn:
        assert conn.execute(select(func.sum(t.c.value), func.count())).one() == (10.0, 5)
    assert len([s for s in seen if s.startswith("INSERT INTO metric_deltas")]) == 1


def test_listeners_see_every_statement_and_a_read_begins_a_transaction(engine) -> None:  # noqa: F811
    deliver(engine, 1)
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    with engine.connect() as conn:
        assert not conn.in_transaction()
        run(conn, select(E.c.id))
        assert conn.in_transaction()  # as SQLAlchemy's autobegin: later reads see the same snapshot
    assert any(s.startswith("SELECT events.id") for s in seen)


def test_a_constraint_violation_raises_sqlalchemys_error(engine) -> None:  # noqa: F811
    deliver(engine, 1)
    with engine.connect() as conn:
        row = conn.execute(select(E)).one()._asdict()
    row.pop("id")
    with pytest.raises(IntegrityError), engine.begin() as conn:
        run(conn, insert(E), row)  # the same (source, dedup_key)
    with engine.begin() as conn:  # the connection went back to the pool usable
        assert run(conn, select(func.count()).select_from(E)).scalar() == 1


def test_a_locked_sqlite_database_raises_operational_error(tmp_path) -> None:
    """What callers catch to retry later: SQLAlchemy's OperationalError, not sqlite3's."""
    store_engine = db.make_engine(f"sqlite:///{tmp_path}/bridge.db")
    db.ensure_schema(store_engine)
    holder = sqlite3.connect(f"{tmp_path}/bridge.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with store_engine.connect() as conn:
            conn.connection.dbapi_connection.execute("PRAGMA busy_timeout=0")
            with pytest.raises(OperationalError, match="locked"):
                run(conn, update(E).values(notes="x"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        store_engine.dispose()


def test_a_boolean_column_reads_as_a_boolean_and_parameters_fail_as_sqlalchemys(engine) -> None:  # noqa: F811
    """Result processors apply (SQLite stores a boolean as 0/1; rules test `is False`); a missing parameter raises
    SQLAlchemy's StatementError, as execute does; values set with `.params()` are bound."""
    first = deliver(engine, 1)
    links = db.links
    dbs.link(engine, source="github", external_id="1", item_key="acme/web#1", zoho_issue_id="Z1")
    with engine.begin() as conn:
        conn.execute(update(links).values(filter_matched=False))
    with engine.connect() as conn:
        assert run(conn, select(links.c.filter_matched)).scalar() is False
        with pytest.raises(StatementError):
            run(conn, select(E.c.id).where(E.c.id == bindparam("wanted")), {})
        assert run(conn, select(E.c.id).where(E.c.id == bindparam("wanted")).params(wanted=first)).scalar() == first
