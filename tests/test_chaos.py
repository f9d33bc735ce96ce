"""Chaos: thousands of deliveries with duplicates, reordering and bursts, a flaky and slow Zoho, a worker
killed with SIGKILL mid-run, and the broker down for a while. The end state is asserted from the fake.

Bounded: a few thousand deliveries, well under 3 minutes on 2 cores.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import requests

from tests.factories import comment_event, github_request, issues_event
from tests.fakes.zoho import FakeZoho
from tests.harness import GITHUB_SECRET, BridgeStack, RedisServer

pytestmark = pytest.mark.e2e

ITEMS = 200
LABEL_SETS = {  # labels → (severity, classification) the shipped github.yaml gives them
    (): ("Minor", "Bug"),
    ("bug",): ("Major", "Bug"),
    ("enhancement",): ("Minor", "Enhancement"),
    ("bug", "severity:critical"): ("Critical", "Bug"),
    ("security", "severity:blocker"): ("Blocker", "Security"),
}


@dataclass
class Item:
    repo: str
    number: int
    title: str = ""
    state: str = "open"
    labels: tuple[str, ...] = ()
    comments: dict[int, str] = field(default_factory=dict)
    clock: int = 0

    @property
    def external_id(self) -> str:
        return f"github:{self.repo}#{self.number}"


def build_deliveries(rng: random.Random) -> tuple[list[Item], list[tuple[str, dict, str]]]:
    items: list[Item] = []
    per_item: list[list[tuple[str, dict, str]]] = []
    comment_ids = iter(range(10_000, 10**6))
    for n in range(ITEMS):
        item = Item(repo=rng.choice(["acme/web", "acme/api", "acme/docs"]), number=n + 1)
        items.append(item)
        seq: list[tuple[str, dict, str]] = []

        def state_event(action: str, item: Item = item, seq: list = seq) -> None:
            item.clock += 1
            payload = issues_event(
                action,
                repo=item.repo,
                number=item.number,
                title=item.title,
                labels=item.labels,
                state=item.state,
                updated=item.clock,
            )
            seq.append(("issues", payload, f"d-{item.number}-{len(seq)}"))

        item.title = f"Item {n} v0"
        item.labels = rng.choice(list(LABEL_SETS))
        state_event("opened")
        burst = n % 10 == 0  # every tenth item gets a burst of rapid edits
        for _ in range(rng.randint(8, 14) if burst else rng.randint(2, 6)):
            change = rng.random()
            if change < 0.4:
                item.title = f"Item {n} v{item.clock}"
                state_event("edited")
            elif change < 0.7:
                item.labels = rng.choice(list(LABEL_SETS))
                state_event("labeled")
            elif change < 0.85:
                item.state = "closed" if item.state == "open" else "open"
                state_event("closed" if item.state == "closed" else "reopened")
            else:
                item.clock += 1
                cid = next(comment_ids)
                item.comments[cid] = f"comment {cid} on item {n}"
                payload = comment_event(
                    "created",
                    comment_id=cid,
                    text=item.comments[cid],
                    commented=item.clock,
                    repo=item.repo,
                    number=item.number,
                    title=item.title,
                    labels=item.labels,
                    state=item.state,
                )
                seq.append(("issue_comment", payload, f"d-{item.number}-{len(seq)}"))
                if rng.random() < 0.3:  # and edit it later
                    item.clock += 1
                    item.comments[cid] = f"comment {cid} on item {n}, edited"
                    payload = comment_event(
                        "edited",
                        comment_id=cid,
                        text=item.comments[cid],
                        commented=item.clock,
                        repo=item.repo,
                        number=item.number,
                        title=item.title,
                        labels=item.labels,
                        state=item.state,
                    )
                    seq.append(("issue_comment", payload, f"d-{item.number}-{len(seq)}"))
        per_item.append(seq)
    deliveries = [d for seq in per_item for d in seq]
    rng.shuffle(deliveries)  # items interleave; per-item order mostly kept below
    # Keep ~80% in per-item order and reorder ~20%: sort by (item, position) then swap neighbours.
    deliveries.sort(key=lambda d: (rng.random() < 0.8, d[2]))
    for i in range(0, len(deliveries) - 1):
        if rng.random() < 0.2:
            deliveries[i], deliveries[i + 1] = deliveries[i + 1], deliveries[i]
    duplicates = [d for d in deliveries if rng.random() < 0.1]
    for dup in duplicates:
        deliveries.insert(rng.randrange(len(deliveries)), dup)
    return items, deliveries


def test_chaos_nothing_lost_nothing_doubled(tmp_path):
    rng = random.Random(20261123)
    items, deliveries = build_deliveries(rng)
    fake = FakeZoho(seed=7).start()
    redis = RedisServer(tmp_path)
    stack = BridgeStack(
        tmp_path,
        fake,
        broker_url=redis.url,
        extra_env={
            "STALE_AFTER_SECONDS": "2",
            "ITEM_LEASE_SECONDS": "8",
            "MAX_ATTEMPTS": "40",
            "RETRY_BASE_SECONDS": "0.2",
            "RETRY_MAX_SECONDS": "2",
            "COALESCE_MS": "100",
        },
    )
    started = time.time()
    try:
        stack.start(workers=2)
        fake.set_faults(
            error_500_rate=0.10,
            error_429_rate=0.05,
            slow_rate=0.03,
            slow_seconds=0.5,
            retry_after_seconds=1,
            error_500_after_commit_rate=0.02,
        )
        answers: dict[str, int] = {}
        lock = threading.Lock()
        session = requests.Session()

        def send(delivery: tuple[str, dict, str]) -> None:
            event, payload, delivery_id = delivery
            body, headers = github_request(GITHUB_SECRET, event, payload, delivery=delivery_id)
            r = session.post(stack.base_url + "/webhooks/github", data=body, headers=headers, timeout=30)
            with lock:
                answers[r.json()["status"]] = answers.get(r.json()["status"], 0) + 1

        # A few forged deliveries: refused, change nothing.
        forged = issues_event("opened", number=9999, title="forged")
        body, headers = github_request("wrong secret", "issues", forged)
        assert stack.post("/webhooks/github", body, headers).status_code == 401

        third = len(deliveries) // 3
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(send, deliveries[:third]))
            stack.kill("worker1")  # SIGKILL mid-run, tasks in flight
            list(pool.map(send, deliveries[third : 2 * third]))
            stack.start_worker("worker1")
            redis.stop()  # the broker goes away; intake must still store and answer 200
            list(pool.map(send, deliveries[2 * third :]))
            time.sleep(3)
            redis.start()

        assert sum(answers.values()) == len(deliveries)
        assert set(answers) <= {"accepted", "duplicate"}
        try:
            stack.wait_idle(timeout=150)
        except AssertionError:
            from bridge import store

            stuck = store.list_events(stack.engine, status="pending", limit=5)
            detail = [(e.id, e.item_key, e.attempts, e.next_attempt_at - time.time(), e.last_error) for e in stuck]
            raise AssertionError(f"{stack.counts()} stuck: {detail}\n{stack.log_text()[-3000:]}") from None
        fake.set_faults()
        counts = stack.counts()
        elapsed = time.time() - started
        log_tail = stack.log_text()[-4000:]
        assert counts.get("failed", 0) == 0, (counts, log_tail)

        zoho = {i["external_id"]: i for i in fake.issues()}
        assert len(fake.issues()) == ITEMS  # exactly one Zoho issue per item: no duplicates, none lost
        for item in items:
            issue = zoho[item.external_id]
            severity, classification = LABEL_SETS[item.labels]
            assert (issue["name"], issue["status"]["name"], issue["severity"]["value"]) == (
                item.title,
                "Closed" if item.state == "closed" else "Open",
                severity,
            ), item
            assert issue["classification"]["value"] == classification
            texts = sorted(c["comment"].split("\n\n")[1] for c in fake.comments(issue["id"]))
            assert texts == sorted(item.comments.values()), item
        assert "forged" not in {i["name"] for i in fake.issues()}
        faults = sum(1 for c in fake.api_calls() if c["status"] in (429, 500))
        print(
            f"\nchaos: {ITEMS} items, {len(deliveries)} deliveries ({answers.get('duplicate', 0)} duplicates), "
            f"{faults} injected Zoho faults, {len(fake.api_calls())} Zoho calls, events {counts}, "
            f"issues {len(fake.issues())}, wall {elapsed:.0f}s"
        )
    finally:
        stack.stop()
        redis.stop()
        fake.stop()
