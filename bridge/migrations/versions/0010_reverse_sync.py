"""reverse sync: reverse_items (back-link state, last Zoho status) and source_writes (echo suppression)

Revision ID: 0010
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reverse_items",
        sa.Column("source", sa.String(32), primary_key=True),
        sa.Column("external_id", sa.String(255), primary_key=True),
        sa.Column("backlink_state", sa.String(16), nullable=False),
        sa.Column("backlink_ref", sa.String(255)),
        sa.Column("backlink_attempts", sa.Integer(), nullable=False),
        sa.Column("backlink_next_at", sa.Float(), nullable=False),
        sa.Column("backlink_error", sa.Text()),
        sa.Column("zoho_status", sa.String(255)),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_reverse_items_backlink", "reverse_items", ["backlink_state", "backlink_next_at"])
    op.create_table(
        "source_writes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ref", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("consumed", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_source_writes_item", "source_writes", ["source", "external_id", "kind"])


def downgrade() -> None:
    op.drop_index("ix_source_writes_item", table_name="source_writes")
    op.drop_table("source_writes")
    op.drop_index("ix_reverse_items_backlink", table_name="reverse_items")
    op.drop_table("reverse_items")
