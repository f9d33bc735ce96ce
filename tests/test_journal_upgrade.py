"""The upgrade to the journal (migration 0014) on a database with rows in every tracker it replaces: nothing in
doubt is lost, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

from alembic import command
from sqlalchemy import select, text

from bridge.store import journal
from bridge.store import schema as db
from bridge.store.schema import _alembic_config
from testkit.dbs import engine  # noqa: F401  - the fixture: a fresh database of each kind

NOW = 1_790_000_000.0
LINKS = [
    # (item, external id, issue, state, intent_at, create_sent_at, recheck_at)
    ("acme/web#1", "github:acme/web#1", None, "creating", NOW - 50, NOW - 40, None),  # a create in doubt
    ("acme/web#2", "github:acme/web#2", "1752587000000100002", "linked", NOW - 90, NOW - 80, NOW + 60),
    ("acme/web#3", "github:acme/web#3", "1752587000000100003", "linked", None, None, None),
    ("acme/web#4", "github:acme/web#4", None, "unlinked", NOW - 900, NOW - 900, None),  # unlinked: next in doubt
]


def _old_rows(conn) -> None:  # type: ignore[no-untyped-def]
    for item, ext, issue, state, intent, sent, recheck in LINKS:
        conn.execute(
            text(
                "INSERT INTO links (source, external_id, item_key, portal, project, zoho_issue_id, state, "
                "last_state_ts, intent_at, create_sent_at, recheck_at, created_at, updated_at) VALUES ('github', "
                ":ext, :item, 'p', 'j', :issue, :state, 0, :intent, :sent, :recheck, :now, :now)"
            ),
            {
                "ext": ext,
                "item": item,
                "issue": issue,
                "state": state,
                "intent": intent,
                "sent": sent,
                "recheck": recheck,
                "now": NOW,
            },
        )
    conn.execute(
        text(
            "INSERT INTO comment_links (source, external_id, comment_id, zoho_comment_id, state, last_ts, updated_at) "
            "VALUES ('github', 'github:acme/web#3', 'c1', NULL, 'posting', 0, :now), "
            "('github', 'github:acme/web#3', 'c2', 'z2', 'posted', 0, :now)"
        ),
        {"now": NOW},
    )
    for ext, state, ref, attempts, error in [
        ("github:acme/web#2", "pending", None, 1, "GITHUB_TOKEN is not set"),
        ("github:acme/web#3", "posting", None, 0, None),
    ]:
        conn.execute(
            text(
                "INSERT INTO reverse_items (source, external_id, backlink_state, backlink_ref, backlink_attempts, "
                "backlink_next_at, backlink_error, zoho_status, updated_at) VALUES ('github', :ext, :state, :ref, :a, "
                ":next, :err, 'Closed', :now)"
            ),
            {"ext": ext, "state": state, "ref": ref, "a": attempts, "next": NOW + 5, "err": error, "now": NOW},
        )
    for kind, ref, consumed in [
        ("comment", "5001", False),
        ("state", "state=closed", False),
        ("state", "state=open", True),
        ("zc_posting", "z77", False),
    ]:
        conn.execute(
            text(
                "INSERT INTO source_writes (source, external_id, kind, ref, created_at, consumed) VALUES ('github', "
                "'github:acme/web#3', :kind, :ref, :now, :consumed)"
            ),
            {"kind": kind, "ref": ref, "now": NOW, "consumed": consumed},
        )
    for key, zid, state, note in [
        ("image:a", None, "fetching", "sending"),
        ("image:b", "att-b", "uploaded", "associating"),
        ("image:c", "att-c", "associated", None),
        ("image:d", None, "skipped", "too large"),
    ]:
        conn.execute(
            text(
                "INSERT INTO attachment_links (source, external_id, attachment_key, zoho_attachment_id, state, note, "
                "updated_at) VALUES ('github', 'github:acme/web#3', :key, :zid, :state, :note, :now)"
            ),
            {"key": key, "zid": zid, "state": state, "note": note, "now": NOW},
        )
    conn.execute(
        text(
            "INSERT INTO item_sync_state (source, external_id, last_matched, applied_values, updated_at) VALUES "
            "('github', 'github:acme/web#3', :m, :v, :now)"
        ),
        {"m": False, "v": json.dumps({"severity": "Blocker"}), "now": NOW},
    )


def test_the_upgrade_keeps_every_doubt(engine):  # noqa: F811
    with engine.begin() as conn:
        command.downgrade(_alembic_config(conn), "0013")
        _old_rows(conn)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "head")

    def op(item: str, kind: str, ref: str = "") -> journal.Operation:
        found = journal.get(engine, "github", item, kind, ref)
        assert found is not None, (item, kind, ref)
        return found

    # A create in doubt stays in doubt, bounded by its first send; an unlinked item's next create too.
    create = op("acme/web#1", "zoho.create")
    assert create.state == "sent" and create.sent_at == NOW - 40 and create.payload["first_sent_at"] == NOW - 50
    assert op("acme/web#4", "zoho.create").state == "sent"
    # A confirmed create that was once in doubt keeps its send times (the late-copy window); its re-check stays.
    assert op("acme/web#2", "zoho.create").state == "confirmed"
    assert op("acme/web#2", "zoho.recheck").state == "planned" and op("acme/web#2", "zoho.recheck").next_at == NOW + 60
    # A comment post in doubt; back-links as they were (with their reason); writes and their echoes.
    assert op("acme/web#3", "zoho.comment", "c1").state == "sent"
    backlink = op("acme/web#2", "source.backlink")
    assert backlink.state == "planned" and backlink.last_error == "GITHUB_TOKEN is not set" and backlink.attempts == 1
    assert op("acme/web#3", "source.backlink").state == "sent"
    with engine.connect() as conn:
        ops = journal.for_item(conn, "github", "acme/web#3")
        assert journal.made_by_us(conn, "github", "acme/web#3", ("source.comment",), "5001")
    echoes = {tuple(o.payload["refs"]): o.echo for o in ops if o.kind == "source.state"}
    assert echoes == {("state=closed",): "awaiting", ("state=open",): "seen"}
    assert op("acme/web#3", "source.comment", "z77").state == "sent"
    # Attachments: in doubt (with the uploaded id), copied, refused.
    assert op("acme/web#3", "zoho.attachment", "image:a").state == "sent"
    uploaded = op("acme/web#3", "zoho.attachment", "image:b")
    assert uploaded.state == "sent" and uploaded.payload["uploaded"] == "att-b"
    assert op("acme/web#3", "zoho.attachment", "image:c").result == "att-c"
    assert op("acme/web#3", "zoho.attachment", "image:d").state == "failed"
    with engine.connect() as conn:
        link = conn.execute(select(db.links).where(db.links.c.item_key == "acme/web#3")).one()
        posting = conn.execute(select(db.comment_links).where(db.comment_links.c.state == "posting")).all()
    assert (link.filter_matched, json.loads(link.written), link.zoho_status) == (
        False,
        {"severity": "Blocker"},
        "Closed",
    )
    assert posting == []
