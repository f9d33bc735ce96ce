"""budgets for every outside system: budget_state and budget_slots replace rate_slots and the kv back-off

Zoho's block (kv `zoho.backoff_until` / `zoho.backoff_reason`) and its daily count (kv `zoho.calls_on.<day>`)
move into budget `zoho`'s row, so a block in force at the upgrade stays in force. The slots are made again
by the first call (they only remember when calls were made; an empty window after an upgrade is at most one
window's worth of calls early, which the provider's own throttle then answers as a wait).

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    state = op.create_table(
        "budget_state",
        sa.Column("budget", sa.String(64), primary_key=True),
        sa.Column("blocked_until", sa.Float, nullable=False, server_default="0"),
        sa.Column("reason", sa.Text),
        sa.Column("outages", sa.Integer, nullable=False, server_default="0"),
        sa.Column("tat", sa.Float, nullable=False, server_default="0"),
        sa.Column("day", sa.String(10)),
        sa.Column("day_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "budget_slots",
        sa.Column("budget", sa.String(64), primary_key=True),
        sa.Column("slot", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("used_at", sa.Float, nullable=False),
    )
    op.create_index("ix_budget_slots_used", "budget_slots", ["budget", "used_at"])
    conn = op.get_bind()
    kv = sa.table("kv", sa.column("key", sa.String), sa.column("value", sa.Text))
    rows = dict(conn.execute(sa.select(kv.c.key, kv.c.value).where(kv.c.key.like("zoho.%"))).all())
    until = float(rows.get("zoho.backoff_until") or 0.0)
    days = sorted(k for k in rows if k.startswith("zoho.calls_on."))
    day = days[-1].removeprefix("zoho.calls_on.") if days else None
    count = int(rows[days[-1]]) if days else 0
    if until or day:
        op.bulk_insert(
            state,
            [
                {
                    "budget": "zoho",
                    "blocked_until": until,
                    "reason": rows.get("zoho.backoff_reason"),
                    "outages": 0,
                    "tat": 0.0,
                    "day": day,
                    "day_count": count,
                    "updated_at": 0.0,
                }
            ],
        )
    conn.execute(sa.delete(kv).where(kv.c.key.in_(["zoho.backoff_until", "zoho.backoff_reason", *days])))
    op.drop_table("rate_slots")


def downgrade() -> None:
    op.create_table(
        "rate_slots",
        sa.Column("slot", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("used_at", sa.Float, nullable=False, index=True),
    )
    op.drop_index("ix_budget_slots_used", table_name="budget_slots")
    op.drop_table("budget_slots")
    op.drop_table("budget_state")
