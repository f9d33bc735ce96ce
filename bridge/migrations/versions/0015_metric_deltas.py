"""metric_deltas: counters appended as deltas and folded later, instead of upserted where they happen

Writers used to upsert one of eight shards of each series inside their own transaction: several rows per
transaction, locked in no order shared with other transactions, so concurrent writers on PostgreSQL waited on
each other and deadlocked under load. Now every change only appends its deltas (an INSERT locks no existing
row) and `counters.fold` adds them to `metric_counters` one folder at a time. The series already counted stay
as they are (their shard rows are summed as before).

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metric_deltas",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("labels", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    # Deltas not folded yet go into the series first, so the counters lose nothing on the way down.
    bind = op.get_bind()
    bind.execute(
        sa.text(
            "INSERT INTO metric_counters (name, labels, shard, value) "
            "SELECT name, labels, 0, SUM(value) FROM metric_deltas WHERE 1 = 1 GROUP BY name, labels "
            "ON CONFLICT (name, labels, shard) DO UPDATE SET value = metric_counters.value + excluded.value"
        )
    )
    op.drop_table("metric_deltas")
