"""one journal of outside operations: `operations` replaces the seven trackers of writes in doubt

Every row that said "an outside write may or may not have happened" moves into `operations`, in the state
that keeps its doubt (nothing in doubt is forgotten by the upgrade):
- links: a create intent (`creating`, or `unlinked` with an intent) -> `zoho.create` sent; a confirmed create
  that was once in doubt -> `zoho.create` confirmed (its send times bound the late-copy search); a re-check
  time -> `zoho.recheck` planned;
- comment_links `posting` -> `zoho.comment` sent (the posted/deleted rows stay: they map comments);
- reverse_items: the back-link's pending/posting/posted/failed -> `source.backlink` planned/sent/confirmed/
  failed; the Zoho status last seen -> links.zoho_status;
- source_writes: comments the bridge wrote -> `source.comment` confirmed (their ids tell its own comments
  apart); state writes -> `source.state` confirmed, their echo awaiting or seen; Zoho comments being copied or
  copied -> `source.comment` sent or confirmed;
- attachment_links: fetching/uploaded -> `zoho.attachment` sent (the uploaded id kept), associated ->
  confirmed, skipped -> failed with its note;
- item_sync_state -> links.filter_matched and links.written.
The downgrade restores the old schema and what the old trackers can hold of the journal (a create in doubt
becomes the link's intent again; back-links, their state; planned re-checks, the link's time); the rest is lost.

Revision ID: 0014
Revises: 0013
"""

import json
import time

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def _table(name: str, *cols: str) -> sa.TableClause:
    return sa.table(name, *(sa.column(c) for c in cols))


def upgrade() -> None:
    ops_table = op.create_table(
        "operations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("item_key", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("ref", sa.String(255), nullable=False, server_default=""),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text),
        sa.Column("result", sa.String(255)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_at", sa.Float),
        sa.Column("last_error", sa.Text),
        sa.Column("planned_at", sa.Float, nullable=False),
        sa.Column("sent_at", sa.Float),
        sa.Column("done_at", sa.Float),
        sa.Column("echo", sa.String(16)),
        sa.UniqueConstraint("source", "item_key", "kind", "ref", name="uq_operations_item"),
    )
    op.create_index("ix_operations_due", "operations", ["next_at"])
    op.create_index("ix_operations_state", "operations", ["state", "kind"])
    with op.batch_alter_table("links") as batch:
        batch.add_column(sa.Column("written", sa.Text))
        batch.add_column(sa.Column("filter_matched", sa.Boolean))
        batch.add_column(sa.Column("zoho_status", sa.String(255)))

    conn = op.get_bind()
    now = time.time()
    rows: dict[tuple[str, str, str, str], dict] = {}

    def add(source: str, item_key: str, kind: str, ref: str, state: str, **values: object) -> None:
        row = {  # every column in every row: one bulk insert
            "source": source,
            "item_key": item_key,
            "kind": kind,
            "ref": ref,
            "state": state,
            "payload": None,
            "result": None,
            "attempts": 0,
            "next_at": None,
            "last_error": None,
            "sent_at": None,
            "done_at": None,
            "echo": None,
            **{k: v for k, v in values.items() if v is not None},
        }
        row["planned_at"] = values.get("planned_at") or now
        key = (source, item_key, kind, ref)
        if key in rows and rows[key]["state"] == "confirmed":
            return  # a confirmed row is the last word on that operation
        rows[key] = row

    links = _table(
        "links", "source", "external_id", "item_key", "zoho_issue_id", "state", "intent_at", "create_sent_at",
        "recheck_at", "created_at", "updated_at",
    )  # fmt: skip
    item_of: dict[tuple[str, str], str] = {}
    for r in conn.execute(sa.select(links)).mappings():
        item_of[(r["source"], r["external_id"])] = r["item_key"]
        src, item = r["source"], r["item_key"]
        if r["intent_at"] is not None:
            first, latest = r["intent_at"], r["create_sent_at"] or r["intent_at"]
            payload = json.dumps({"first_sent_at": first})
            if r["zoho_issue_id"] and r["state"] in ("linked", "deleted"):
                add(src, item, "zoho.create", "", "confirmed", planned_at=first, sent_at=latest, done_at=latest,
                    result=r["zoho_issue_id"], payload=payload)  # fmt: skip
            elif r["state"] != "dry-run":
                add(src, item, "zoho.create", "", "sent", planned_at=first, sent_at=latest, payload=payload)
        if r["recheck_at"] is not None:
            add(src, item, "zoho.recheck", "", "planned", next_at=r["recheck_at"])

    comments = _table("comment_links", "source", "external_id", "comment_id", "state", "updated_at")
    for r in conn.execute(sa.select(comments).where(comments.c.state == "posting")).mappings():
        item = item_of.get((r["source"], r["external_id"]))
        if item is not None:
            add(r["source"], item, "zoho.comment", r["comment_id"], "sent", sent_at=r["updated_at"], next_at=now)
    conn.execute(sa.delete(comments).where(comments.c.state == "posting"))

    reverse = _table(
        "reverse_items", "source", "external_id", "backlink_state", "backlink_ref", "backlink_attempts",
        "backlink_next_at", "backlink_error", "zoho_status", "updated_at",
    )  # fmt: skip
    states = {"pending": "planned", "posting": "sent", "posted": "confirmed", "failed": "failed"}
    for r in conn.execute(sa.select(reverse)).mappings():
        item = item_of.get((r["source"], r["external_id"]))
        if item is None:
            continue
        if r["zoho_status"]:
            conn.execute(
                sa.text("UPDATE links SET zoho_status = :s WHERE source = :src AND external_id = :ext"),
                {"s": r["zoho_status"], "src": r["source"], "ext": r["external_id"]},
            )
        state = states.get(r["backlink_state"])
        if state is None:
            continue
        add(
            r["source"], item, "source.backlink", "", state,
            attempts=r["backlink_attempts"] or 0,
            next_at=r["backlink_next_at"] if state in ("planned", "sent") else None,
            sent_at=r["updated_at"] if state in ("sent", "confirmed") else None,
            done_at=r["updated_at"] if state in ("confirmed", "failed") else None,
            result=r["backlink_ref"] if state == "confirmed" else None,
            last_error=r["backlink_error"],
        )  # fmt: skip

    writes = _table("source_writes", "id", "source", "external_id", "kind", "ref", "created_at", "consumed")
    for r in conn.execute(sa.select(writes).order_by(writes.c.id)).mappings():
        item = item_of.get((r["source"], r["external_id"]))
        if item is None:
            continue
        src, at = r["source"], r["created_at"]
        if r["kind"] == "comment":
            add(src, item, "source.comment", f"legacy:{r['id']}", "confirmed", sent_at=at, done_at=at,
                result=r["ref"])  # fmt: skip
        elif r["kind"] == "state":
            add(src, item, "source.state", f"legacy:{r['id']}", "confirmed", sent_at=at, done_at=at,
                payload=json.dumps({"refs": [r["ref"]]}), echo="seen" if r["consumed"] else "awaiting")  # fmt: skip
        elif r["kind"] == "zc_posting":
            add(src, item, "source.comment", r["ref"], "sent", sent_at=at, next_at=now)
        elif r["kind"] == "zc_posted":
            add(src, item, "source.comment", r["ref"], "confirmed", sent_at=at, done_at=at)

    attachments = _table(
        "attachment_links", "source", "external_id", "attachment_key", "zoho_attachment_id", "state", "note",
        "updated_at",
    )  # fmt: skip
    for r in conn.execute(sa.select(attachments)).mappings():
        item = item_of.get((r["source"], r["external_id"]))
        if item is None:
            continue
        src, key, at, state = r["source"], r["attachment_key"], r["updated_at"], r["state"]
        if state in ("fetching", "uploaded"):
            uploaded = r["zoho_attachment_id"] if state == "uploaded" else None
            add(src, item, "zoho.attachment", key, "sent", sent_at=at, next_at=now,
                payload=json.dumps({"uploaded": uploaded} if uploaded else {}))  # fmt: skip
        elif state == "associated":
            add(src, item, "zoho.attachment", key, "confirmed", sent_at=at, done_at=at,
                result=r["zoho_attachment_id"])  # fmt: skip
        elif state == "skipped":
            add(src, item, "zoho.attachment", key, "failed", done_at=at, last_error=r["note"] or "skipped")

    sync_state = _table("item_sync_state", "source", "external_id", "last_matched", "applied_values")
    for r in conn.execute(sa.select(sync_state)).mappings():
        conn.execute(
            sa.text("UPDATE links SET filter_matched = :m, written = :w WHERE source = :src AND external_id = :ext"),
            {"m": r["last_matched"], "w": r["applied_values"], "src": r["source"], "ext": r["external_id"]},
        )

    if rows:
        op.bulk_insert(ops_table, list(rows.values()))
    for name in ("reverse_items", "source_writes", "attachment_links", "item_sync_state"):
        op.drop_table(name)
    with op.batch_alter_table("links") as batch:
        batch.drop_column("intent_at")
        batch.drop_column("create_sent_at")
        batch.drop_column("recheck_at")


def downgrade() -> None:
    with op.batch_alter_table("links") as batch:
        batch.add_column(sa.Column("intent_at", sa.Float))
        batch.add_column(sa.Column("create_sent_at", sa.Float))
        batch.add_column(sa.Column("recheck_at", sa.Float))
    reverse = op.create_table(
        "reverse_items",
        sa.Column("source", sa.String(32), primary_key=True),
        sa.Column("external_id", sa.String(255), primary_key=True),
        sa.Column("backlink_state", sa.String(16), nullable=False, server_default="none"),
        sa.Column("backlink_ref", sa.String(255)),
        sa.Column("backlink_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("backlink_next_at", sa.Float, nullable=False, server_default="0"),
        sa.Column("backlink_error", sa.Text),
        sa.Column("zoho_status", sa.String(255)),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_reverse_items_backlink", "reverse_items", ["backlink_state", "backlink_next_at"])
    op.create_table(
        "source_writes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ref", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("consumed", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_source_writes_item", "source_writes", ["source", "external_id", "kind"])
    op.create_table(
        "attachment_links",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("attachment_key", sa.String(255), nullable=False),
        sa.Column("zoho_attachment_id", sa.String(64)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.UniqueConstraint("source", "external_id", "attachment_key", name="uq_attachment_links"),
    )
    op.create_table(
        "item_sync_state",
        sa.Column("source", sa.String(32), primary_key=True),
        sa.Column("external_id", sa.String(255), primary_key=True),
        sa.Column("last_matched", sa.Boolean),
        sa.Column("applied_values", sa.Text),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    conn = op.get_bind()
    links = _table("links", "source", "external_id", "item_key", "intent_at", "create_sent_at", "recheck_at",
                   "zoho_status")  # fmt: skip
    ops = _table("operations", "source", "item_key", "kind", "state", "payload", "sent_at", "next_at", "result",
                 "attempts", "last_error")  # fmt: skip
    external = {(r.source, r.item_key): r.external_id for r in conn.execute(sa.select(links)).all()}
    backlinks = {"planned": "pending", "sent": "posting", "confirmed": "posted", "failed": "failed"}
    for r in conn.execute(sa.select(ops)).mappings():
        ext = external.get((r["source"], r["item_key"]))
        if ext is None:
            continue
        where = (links.c.source == r["source"]) & (links.c.item_key == r["item_key"])
        if r["kind"] == "zoho.create" and r["state"] in ("sent", "confirmed"):
            first = json.loads(r["payload"]).get("first_sent_at") if r["payload"] else None
            conn.execute(sa.update(links).where(where).values(intent_at=first or r["sent_at"],
                                                               create_sent_at=r["sent_at"]))  # fmt: skip
        elif r["kind"] == "zoho.recheck" and r["state"] == "planned":
            conn.execute(sa.update(links).where(where).values(recheck_at=r["next_at"]))
        elif r["kind"] == "source.backlink":
            conn.execute(
                reverse.insert().values(
                    source=r["source"], external_id=ext, backlink_state=backlinks.get(r["state"], "none"),
                    backlink_ref=r["result"], backlink_attempts=r["attempts"] or 0,
                    backlink_next_at=r["next_at"] or 0.0, backlink_error=r["last_error"], updated_at=time.time(),
                )
            )  # fmt: skip
    op.drop_index("ix_operations_state", table_name="operations")
    op.drop_index("ix_operations_due", table_name="operations")
    op.drop_table("operations")
    with op.batch_alter_table("links") as batch:
        batch.drop_column("zoho_status")
        batch.drop_column("filter_matched")
        batch.drop_column("written")
