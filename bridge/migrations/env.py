"""Alembic environment: migrations run through `bridge db upgrade` (or at start-up, under a lock)."""

from __future__ import annotations

from alembic import context

from bridge.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
