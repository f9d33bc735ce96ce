"""metric counters kept as things happen, and indexes for paging and retention

Revision ID: 0007
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metric_counters",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("labels", sa.String(length=255), nullable=False),
        sa.Column("shard", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", "labels", "shard"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_status_id", ["status", "id"], unique=False)
        batch_op.create_index("ix_events_processed", ["processed_at", "status"], unique=False)
    with op.batch_alter_table("links", schema=None) as batch_op:
        batch_op.create_index("ix_links_zoho_issue", ["zoho_issue_id"], unique=False)
    with op.batch_alter_table("zoho_calls", schema=None) as batch_op:
        batch_op.create_index("ix_zoho_calls_at", ["at"], unique=False)

    # Start the counters from the history already stored, so they continue where the old scans left off.
    from bridge.store import counters

    counters.seed_from_history(op.get_bind())


def downgrade() -> None:
    with op.batch_alter_table("zoho_calls", schema=None) as batch_op:
        batch_op.drop_index("ix_zoho_calls_at")
    with op.batch_alter_table("links", schema=None) as batch_op:
        batch_op.drop_index("ix_links_zoho_issue")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_processed")
        batch_op.drop_index("ix_events_status_id")
    op.drop_table("metric_counters")
