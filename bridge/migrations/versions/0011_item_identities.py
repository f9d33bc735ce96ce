"""item identities: a GitHub issue keeps its item (link, claim, Zoho issue) across renames and transfers

Creates `item_identities` and binds the GitHub items already stored: each item key (`acme/web#12`) to the
issue id its link's last applied fields or its newest event carry, so a delivery that arrives after the
upgrade under a new repository name still finds the item's link instead of starting a second Zoho issue.
Where two item keys carry one issue id (a rename the old code forked), the most recently updated link wins.

Revision ID: 0011
Revises: 0009
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0009"
branch_labels = None
depends_on = None


def _issue_id(text: str | None, *path: str) -> str | None:
    try:
        value = json.loads(text) if text else None
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
    except ValueError:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str) or str(value) in ("", "None"):
        return None
    return str(value)


def upgrade() -> None:
    table = op.create_table(
        "item_identities",
        sa.Column("source", sa.String(32), primary_key=True),
        sa.Column("identity", sa.String(255), primary_key=True),
        sa.Column("item_key", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_item_identities_item", "item_identities", ["source", "item_key"])
    conn = op.get_bind()
    bound: set[str] = set()
    keys: set[str] = set()
    rows: list[dict[str, object]] = []

    def take(identity: str | None, item_key: str, at: float) -> None:
        if identity and identity not in bound and item_key not in keys:
            bound.add(identity)
            keys.add(item_key)
            rows.append({"source": "github", "identity": identity, "item_key": item_key, "created_at": at})

    links = conn.execute(
        sa.text("SELECT item_key, last_fields, updated_at FROM links WHERE source = 'github' ORDER BY updated_at DESC")
    )
    for item_key, last_fields, updated_at in links:
        take(_issue_id(last_fields, "issue_id"), item_key, float(updated_at or 0.0))
    events = conn.execute(
        sa.text("SELECT item_key, event_json, received_at FROM events WHERE source = 'github' ORDER BY id DESC")
    )
    for item_key, event_json, received_at in events:
        if item_key not in keys:
            take(_issue_id(event_json, "fields", "issue_id"), item_key, float(received_at or 0.0))
    for start in range(0, len(rows), 500):
        op.bulk_insert(table, rows[start : start + 500])


def downgrade() -> None:
    op.drop_index("ix_item_identities_item", table_name="item_identities")
    op.drop_table("item_identities")
