"""The item page (`/admin/items/<source>/<item key>`) for an item with 1,000 events, on the embedded default (SQLite),
timed against the events list page (`/admin/`) in the same run: target under 200 ms.

The item's history is what a busy item leaves: 1,000 deliveries (one state, then edits and comments), each done
with its notes, one attempt and one or two Zoho calls, a redelivery answered duplicate, journal operations and
comment links; 20,000 events of other items around it. Both pages are rendered by the Flask app in this process
(the test client: no HTTP, no gunicorn), logged in, median of the runs after one warm-up. The page shows the
newest 300 events' story by default; `?all=1` (every event) is timed too.

    .venv/bin/python bench/item_page.py [--quick] [--events 1000] [--others 20000] [--runs 15] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert

from bench.common import REPO, print_header, temp_dir, write_json
from bridge.settings import load_settings
from bridge.store import calllog
from bridge.store import schema as db

TOKEN = "bench-admin-token-0123456789abcdef"
TARGET_MS = 200.0
ITEM = "acme/web#1"


def _event(n: int, item_key: str, at: float) -> dict:
    comment = n % 3 == 2
    action = "comment_created" if comment else ("created" if n == 0 else "updated")
    body = {
        "source": "github",
        "item_kind": "issue",
        "item_key": item_key,
        "action": action,
        "event_name": "issue_comment.created" if comment else "issues.edited",
        "source_ts": "2026-03-02T09:00:00+00:00",
        "fields": {"title": f"Title {n}", "labels": ["bug"]},
        "comment": {"id": str(n), "body": f"comment {n}"} if comment else None,
        "source_project": "acme/web",
        "has_state": True,
    }
    return {
        "source": "github",
        "dedup_key": f"{item_key}:{n}",
        "event_name": body["event_name"],
        "item_key": item_key,
        "action": action,
        "source_ts": at + n,
        "received_at": at + n,
        "status": "done" if n % 5 else "superseded",
        "attempts": 1,
        "next_attempt_at": 0.0,
        "headers": json.dumps({"User-Agent": "GitHub-Hookshot/044aadd", "X-GitHub-Event": "issues"}),
        "payload": json.dumps({"issue": {"number": 1, "title": f"Title {n}", "body": "x" * 600}}).encode(),
        "event_json": json.dumps(body),
        "notes": "no field changed: no Zoho call" if n % 7 == 0 else None,
        "processed_at": at + n + 0.5,
        "origin": "live",
    }


def seed(engine, events: int, others: int) -> None:  # type: ignore[no-untyped-def]
    at = time.time() - 86400
    with engine.begin() as conn:
        for start in range(0, others, 1000):
            conn.execute(
                insert(db.events),
                [_event(n, f"acme/web#{100 + n}", at) for n in range(start, min(others, start + 1000))],
            )
        conn.execute(insert(db.events), [_event(n, ITEM, at) for n in range(events)])
        ids = [
            r.id for r in conn.execute(db.events.select().where(db.events.c.item_key == ITEM).order_by(db.events.c.id))
        ]
        conn.execute(
            insert(db.attempts),
            [
                {
                    "event_id": i,
                    "number": 1,
                    "started_at": at + k,
                    "finished_at": at + k + 0.2,
                    "outcome": "done",
                    "detail": "",
                }
                for k, i in enumerate(ids)
            ],
        )
        conn.execute(
            insert(db.zoho_calls),
            [
                {
                    "event_id": i,
                    "at": at + k + 0.1,
                    "method": "PATCH",
                    "endpoint": "issue.update",
                    "path": "/api/v3/portal/739121528/projects/1752587000000097024/issues/1752587000000100001",
                    "request_json": json.dumps({"name": f"Title {k}"}),
                    "status": 200,
                    "response_text": '{"id": "1"}',
                    "duration_ms": 40.0,
                    "dry_run": False,
                }
                for k, i in enumerate(ids)
                if k % 5
            ],
        )
        conn.execute(
            insert(db.links).values(
                source="github",
                external_id=f"github:{ITEM}",
                item_key=ITEM,
                portal="739121528",
                project="1752587000000097024",
                zoho_issue_id="1752587000000100001",
                state="linked",
                last_state_ts=at + events,
                created_at=at,
                updated_at=at + events,
            )
        )
        conn.execute(
            insert(db.comment_links),
            [
                {
                    "source": "github",
                    "external_id": f"github:{ITEM}",
                    "comment_id": str(n),
                    "zoho_comment_id": str(9000 + n),
                    "state": "posted",
                    "last_ts": at + n,
                    "body_hash": "h",
                    "updated_at": at + n,
                }
                for n in range(2, events, 3)
            ],
        )
        conn.execute(
            insert(db.operations),
            [
                {
                    "source": "github",
                    "item_key": ITEM,
                    "kind": "zoho.comment",
                    "ref": str(n),
                    "state": "confirmed",
                    "result": str(9000 + n),
                    "attempts": 0,
                    "planned_at": at + n,
                    "sent_at": at + n,
                    "done_at": at + n,
                }
                for n in range(2, events, 3)
            ]
            + [
                {
                    "source": "github",
                    "item_key": ITEM,
                    "kind": "zoho.create",
                    "ref": "",
                    "state": "confirmed",
                    "result": "1752587000000100001",
                    "attempts": 0,
                    "planned_at": at,
                    "sent_at": at,
                    "done_at": at,
                }
            ],
        )
    calllog.delivery_repeated(
        engine, source="github", dedup_key=f"{ITEM}:5", event_id=ids[5], item_key=ITEM, sender="GitHub-Hookshot/044aadd"
    )


def timed(client, path: str, runs: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    client.get(path)  # warm-up: templates compiled, caches filled
    samples = []
    size = 0
    for _ in range(runs):
        started = time.perf_counter()
        answer = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (path, answer.status_code)
        size = len(answer.data)
    return statistics.median(samples), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 events, 2,000 others, 5 runs")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--others", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.quick:
        args.events, args.others, args.runs = 200, 2000, 5
    info = print_header(f"item page: one item with {args.events} events among {args.others} others (SQLite)")
    from bridge.web import create_app

    with temp_dir("bench-item-page-") as tmp:
        mappings = tmp / "mappings"
        mappings.mkdir()
        shutil.copy(REPO / "mappings" / "examples" / "github.yaml", mappings / "github.yaml")
        env = {
            "BRIDGE_DATA_DIR": str(tmp / "var"),
            "MAPPINGS_DIR": str(mappings),
            "ADMIN_TOKEN": TOKEN,
            "BROKER_URL": "redis://127.0.0.1:1/0",
            "GITHUB_WEBHOOK_SECRET": "bench",
        }
        app = create_app(load_settings(env))
        engine = app.extensions["bridge"].engine
        seed(engine, args.events, args.others)
        client = app.test_client()
        page = client.get("/admin/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf is not None
        client.post("/admin/login", data={"token": TOKEN, "csrf_token": csrf.group(1), "next": "/admin/"})
        item_path = "/admin/items/github/acme/web%231"
        item_ms, item_bytes = timed(client, item_path, args.runs)
        every_ms, every_bytes = timed(client, item_path + "?all=1", max(3, args.runs // 3))
        list_ms, list_bytes = timed(client, "/admin/", args.runs)
        engine.dispose()
    ratio = item_ms / list_ms if list_ms else float("nan")
    ok = item_ms < TARGET_MS
    print(f"   item page (newest 300 events' story): {item_ms:.1f} ms median, {item_bytes / 1024:.0f} KiB")
    print(f"   item page ?all=1 ({args.events} events' story): {every_ms:.1f} ms median, {every_bytes / 1024:.0f} KiB")
    print(f"   events list page (/admin/, 50 events, charts): {list_ms:.1f} ms median, {list_bytes / 1024:.0f} KiB")
    print(f"   item page / events list page: {ratio:.2f}; target < {TARGET_MS:.0f} ms: {'MET' if ok else 'MISSED'}")
    write_json(
        args.json,
        {
            "info": info,
            "item_ms": item_ms,
            "all_ms": every_ms,
            "list_ms": list_ms,
            "ratio": ratio,
            "events": args.events,
            "others": args.others,
            "target_met": ok,
        },
    )


if __name__ == "__main__":
    main()
