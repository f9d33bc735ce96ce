"""see and steer each item: repeated deliveries, operator actions, pauses and held items, source calls and calls
per minute, Zoho issues found by their marker (issue 23)

New tables only: nothing existing changes, so the upgrade is instant whatever the history's size.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivery_repeats",
        sa.Column("source", sa.String(32), primary_key=True),
        sa.Column("dedup_key", sa.String(255), primary_key=True),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("item_key", sa.String(255), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.Float(), nullable=False),
        sa.Column("last_at", sa.Float(), nullable=False),
        sa.Column("sender", sa.String(255)),
    )
    op.create_index("ix_delivery_repeats_item", "delivery_repeats", ["source", "item_key"])
    op.create_table(
        "operator_actions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("item_key", sa.String(255), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text()),
        sa.Column("actor", sa.String(32), nullable=False),
    )
    op.create_index("ix_operator_actions_item", "operator_actions", ["source", "item_key", "id"])
    op.create_table(
        "pauses",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("since", sa.Float(), nullable=False),
        sa.Column("actor", sa.String(32)),
    )
    op.create_table(
        "held_items",
        sa.Column("source", sa.String(32), primary_key=True),
        sa.Column("item_key", sa.String(255), primary_key=True),
        sa.Column("why", sa.String(300), nullable=False),
        sa.Column("since", sa.Float(), nullable=False),
    )
    op.create_index("ix_held_items_why", "held_items", ["why"])
    op.create_table(
        "source_calls",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("item_key", sa.String(255), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("status", sa.Integer()),
        sa.Column("duration_ms", sa.Float()),
        sa.Column("message", sa.Text()),
    )
    op.create_index("ix_source_calls_item", "source_calls", ["source", "item_key", "id"])
    op.create_index("ix_source_calls_at", "source_calls", ["at"])
    op.create_table(
        "call_minutes",
        sa.Column("system", sa.String(32), primary_key=True),
        sa.Column("minute", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("lane", sa.String(16), primary_key=True),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
    )
    op.create_table(
        "zoho_found",
        sa.Column("portal", sa.String(64), primary_key=True),
        sa.Column("issue_id", sa.String(64), primary_key=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("issue_key", sa.String(64)),
        sa.Column("title", sa.Text()),
        sa.Column("created_at", sa.Float()),
        sa.Column("external_id", sa.String(255)),
        sa.Column("urls", sa.Text()),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_zoho_found_external", "zoho_found", ["external_id"])
    op.create_index("ix_zoho_found_project", "zoho_found", ["portal", "project"])


def downgrade() -> None:
    for index, table in (
        ("ix_zoho_found_project", "zoho_found"),
        ("ix_zoho_found_external", "zoho_found"),
        ("ix_source_calls_at", "source_calls"),
        ("ix_source_calls_item", "source_calls"),
        ("ix_held_items_why", "held_items"),
        ("ix_operator_actions_item", "operator_actions"),
        ("ix_delivery_repeats_item", "delivery_repeats"),
    ):
        op.drop_index(index, table_name=table)
    for table in (
        "zoho_found",
        "call_minutes",
        "source_calls",
        "held_items",
        "pauses",
        "operator_actions",
        "delivery_repeats",
    ):
        op.drop_table(table)
