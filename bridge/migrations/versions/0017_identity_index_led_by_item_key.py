"""The item-handle index of item_identities led by `item_key` (issue 24)

It was (source, item_key): to a PostgreSQL planner without statistics on the table (autovacuum off) it ranks with
the primary key (source, identity) for the identity lookup every delivery of a GitHub issue makes, and taking it
reads every binding of the source (2 ms a delivery at 5,000 issues). Led by `item_key`, it cannot serve that
lookup, and still serves the handle's own lookups (item_key and source both given).

One index rebuilt on a table of one row per GitHub issue: seconds at a million issues.

Revision ID: 0017
Revises: 0016
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_item_identities_item", table_name="item_identities")
    op.create_index("ix_item_identities_item", "item_identities", ["item_key", "source"])


def downgrade() -> None:
    op.drop_index("ix_item_identities_item", table_name="item_identities")
    op.create_index("ix_item_identities_item", "item_identities", ["source", "item_key"])
