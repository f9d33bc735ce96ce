"""The Alembic migrations build exactly the schema the code declares, and re-running them is a no-op."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from bridge.store import schema as db


def test_migrations_reach_the_declared_schema(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path}/m.db")
    db.ensure_schema(engine)
    db.ensure_schema(engine)  # idempotent
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        assert context.get_current_revision() is not None
        assert compare_metadata(context, db.metadata) == []
