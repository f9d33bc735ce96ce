"""links.create_sent_at: when the item's latest create was sent (intent_at keeps the first one)

A re-check looks for late copies of a create only while one can still land; that is measured from the
latest create sent, not from the first intent (which a long outage or `links unlink` makes old).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("links") as batch_op:
        batch_op.add_column(sa.Column("create_sent_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("links") as batch_op:
        batch_op.drop_column("create_sent_at")
