"""fenced item claims: lease generations, per-item back-off, create intents in doubt

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("generation", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("retry_at", sa.Float(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("failures", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("links", schema=None) as batch_op:
        batch_op.add_column(sa.Column("intent_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("recheck_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("links", schema=None) as batch_op:
        batch_op.drop_column("recheck_at")
        batch_op.drop_column("intent_at")
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.drop_column("failures")
        batch_op.drop_column("retry_at")
        batch_op.drop_column("generation")
