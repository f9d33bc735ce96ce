"""mapping v3: attachment links and per-item filter / field-ownership state

Revision ID: 0009
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attachment_links",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("attachment_key", sa.String(length=255), nullable=False),
        sa.Column("zoho_attachment_id", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source", "external_id", "attachment_key", name="uq_attachment_links"),
    )
    op.create_table(
        "item_sync_state",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("last_matched", sa.Boolean(), nullable=True),
        sa.Column("applied_values", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("source", "external_id"),
    )


def downgrade() -> None:
    op.drop_table("item_sync_state")
    op.drop_table("attachment_links")
