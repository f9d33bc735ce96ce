"""backfills table; events remember their origin (live or a backfill)

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("origin", sa.String(32), nullable=False, server_default="live"))
        batch_op.create_index("ix_events_origin", ["origin", "status"])
    op.create_table(
        "backfills",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("cursor", sa.Text()),
        sa.Column("items_read", sa.Integer(), nullable=False),
        sa.Column("events_stored", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("source_calls", sa.Integer(), nullable=False),
        sa.Column("planned_zoho_calls", sa.Float(), nullable=False),
        sa.Column("paced_until", sa.Float(), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float()),
    )
    op.create_index("ix_backfills_scope", "backfills", ["source", "scope"])


def downgrade() -> None:
    op.drop_index("ix_backfills_scope", table_name="backfills")
    op.drop_table("backfills")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_origin")
        batch_op.drop_column("origin")
