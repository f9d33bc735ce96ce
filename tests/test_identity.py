"""Stable identity (issue #11): an item is the source's never-changing id, not its current name.

Unit tests of the GitHub ids and of the identity bindings, then the sync service in this process against
a real FakeZoho over HTTP (as in test_sync_guarantees.py): a repository rename, a transfer (in order,
reordered, duplicated), a new `external_id` template, another mapping instance, a routing change that moves
the issue, and a database upgraded from the old `acme/web#N` keys. Each checks the end state in Zoho: one
issue, the latest state, its external id updated, comments once.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, text

from bridge import store
from bridge.events import BadDelivery, IgnoredEvent, NormalizedEvent
from bridge.mapping.loader import dialect_problems
from bridge.process.runtime import Runtime
from bridge.settings import load_settings
from bridge.sources.github.webhook import GitHubSource
from bridge.store import identities
from bridge.store import schema as db
from bridge.targets.zoho.dialects import marker
from testkit.dbs import fresh_engine
from testkit.factories import (
    comment_event,
    github_issue_id,
    github_request,
    issues_event,
    repository_id,
    transfer_events,
)
from testkit.fakes.zoho import FakeZoho
from testkit.harness import GITHUB_SECRET, in_process_env

SOURCE = GitHubSource(GITHUB_SECRET)
WEB, API = "1752587000000097024", "1752587000000098001"  # the shipped mapping's projects for acme/web, acme/api
WEB_ID = repository_id("acme/web")
ISSUE_ID = github_issue_id("acme/web", 1)


def parse(event: str, payload: dict) -> NormalizedEvent:
    body, headers = github_request(GITHUB_SECRET, event, payload)
    return SOURCE.parse(body, headers)


def renamed(action: str, **kwargs: object) -> dict:
    """acme/web renamed to acme/site: a new full_name, the same repository id and issue id."""
    return issues_event(action, repo="acme/site", repo_id=WEB_ID, issue_id=ISSUE_ID, **kwargs)  # type: ignore[arg-type]


def renamed_comment(action: str, **kwargs: object) -> dict:
    return comment_event(action, repo="acme/site", repo_id=WEB_ID, issue_id=ISSUE_ID, **kwargs)  # type: ignore[arg-type]


# -- the source: which ids a delivery carries ------------------------------------------------------------


def test_a_github_event_is_identified_by_the_issue_id():
    event = parse("issues", issues_event("opened"))
    assert (event.item_key, event.identity, event.previous_identity) == ("acme/web#1", str(ISSUE_ID), "")
    assert event.fields["issue_id"] == ISSUE_ID and event.fields["repository_id"] == WEB_ID
    comment = parse("issue_comment", comment_event("created", comment_id=9, text="hi", commented=1))
    assert comment.identity == str(ISSUE_ID)  # a comment belongs to the same item


def test_a_rename_keeps_the_identity_and_changes_only_the_name():
    before = parse("issues", issues_event("opened"))
    after = parse("issues", renamed("edited", updated=5))
    assert after.identity == before.identity and after.fields["repository_id"] == before.fields["repository_id"]
    assert (after.item_key, after.source_project) == ("acme/site#1", "acme/site")


def test_a_transfer_names_the_new_issue_and_the_old_one():
    transferred, opened = transfer_events(new_repo="acme/api", new_number=7, updated=10)
    moved = parse("issues", transferred)
    new_id = str(github_issue_id("acme/api", 7))
    assert (moved.action, moved.event_name) == ("updated", "issues.transferred")
    assert (moved.identity, moved.previous_identity) == (new_id, str(ISSUE_ID))
    assert (moved.item_key, moved.source_project, moved.fields["number"]) == ("acme/api#7", "acme/api", 7)
    assert moved.fields["html_url"] == "https://github.com/acme/api/issues/7"  # the new issue's fields
    reopened = parse("issues", opened)  # the new repository's own delivery names the old issue too
    assert (reopened.action, reopened.identity, reopened.previous_identity) == ("created", new_id, str(ISSUE_ID))
    assert NormalizedEvent.from_json(moved.to_json()) == moved


def test_a_transfer_whose_new_issue_is_missing_or_unnamed_is_refused_or_ignored():
    transferred, _ = transfer_events(new_repo="acme/api", new_number=7, updated=10)
    del transferred["changes"]["new_repository"]
    with pytest.raises(BadDelivery, match=r"changes\.new_issue, changes\.new_repository"):
        parse("issues", transferred)
    transferred, _ = transfer_events(new_repo="acme/api", new_number=7, updated=10)
    del transferred["changes"]["new_issue"]["id"]
    with pytest.raises(IgnoredEvent, match="without the issues' ids"):
        parse("issues", transferred)
    transferred, _ = transfer_events(new_repo="acme/api", new_number=7, updated=10)
    transferred["changes"]["new_issue"]["id"] = "not a number"
    with pytest.raises(BadDelivery, match=r"changes\.new_issue\.id"):
        parse("issues", transferred)


def test_a_body_without_an_issue_id_keeps_the_name_as_its_identity():
    payload = issues_event("opened")
    del payload["issue"]["id"]
    event = parse("issues", payload)
    assert (event.item_key, event.identity) == ("acme/web#1", "")


# -- the bindings: which item handle a delivery is filed under -------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    yield from fresh_engine(request.param, tmp_path)


def _resolve(engine, event: NormalizedEvent) -> str:
    with engine.begin() as conn:
        return identities.resolve(conn, event).item_key


def test_bindings_follow_renames_and_transfers_in_any_order(engine):
    assert _resolve(engine, parse("issues", issues_event("opened"))) == "acme/web#1"
    assert _resolve(engine, parse("issues", renamed("edited", updated=2))) == "acme/web#1"  # renamed: same item
    transferred, opened = transfer_events(
        old_repo="acme/site", new_repo="acme/api", new_number=7, updated=3, issue_id=None
    )
    transferred["issue"]["id"] = opened["changes"]["old_issue"]["id"] = ISSUE_ID  # the renamed one moves
    assert _resolve(engine, parse("issues", opened)) == "acme/web#1"  # the new repository's delivery first
    assert _resolve(engine, parse("issues", transferred)) == "acme/web#1"
    later = issues_event("edited", repo="acme/api", number=7, updated=4)
    assert _resolve(engine, parse("issues", later)) == "acme/web#1"
    # Another issue #1 in a new repository that took the old name is another item.
    other = issues_event("opened", repo="acme/web", repo_id=123, issue_id=999)
    assert _resolve(engine, parse("issues", other)) == "acme/web#1 (id 999)"


def test_concurrent_first_deliveries_of_one_issue_file_it_under_one_handle(engine):
    """Eight intakes store the first deliveries of one issue at once (under two names: a rename raced its
    first sync): every event lands under one handle, so one claim and one link serve them."""
    import threading

    payloads = [issues_event("opened"), renamed("edited", updated=1)] * 4
    keys: list[str] = []
    barrier = threading.Barrier(len(payloads))

    def intake(i: int) -> None:
        event = parse("issues", payloads[i])
        barrier.wait()
        keys.append(store.record_delivery(engine, event, dedup_key=f"d{i}", headers={}, payload=b"{}").item_key)

    threads = [threading.Thread(target=intake, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(keys) == len(payloads) and len(set(keys)) == 1
    with engine.connect() as conn:
        assert conn.execute(select(db.events.c.item_key).distinct()).scalars().all() == keys[:1]
        assert conn.execute(select(db.item_identities.c.identity)).scalars().all() == [str(ISSUE_ID)]


def test_an_identity_seen_once_costs_one_read_and_no_write(engine):
    _resolve(engine, parse("issues", issues_event("opened")))
    statements: list[str] = []
    with engine.begin() as conn:
        from sqlalchemy import event as sa_event

        sa_event.listen(conn, "before_cursor_execute", lambda *a: statements.append(a[2]))
        identities.resolve(conn, parse("issues", renamed("edited", updated=2)))
    assert len(statements) == 1 and statements[0].lstrip().upper().startswith("SELECT")


# -- the sync service against FakeZoho -----------------------------------------------------------------


@pytest.fixture
def fake():
    with FakeZoho() as server:
        yield server


def make_runtime(tmp: Path, fake: FakeZoho, **extra: str) -> Runtime:
    return Runtime(load_settings(in_process_env(tmp, fake, "github", **extra)))


def deliver(runtime: Runtime, event: str, payload: dict, delivery: str | None = None) -> str:
    """Store a delivery as intake does; returns the item handle it was filed under."""
    body, headers = github_request(GITHUB_SECRET, event, payload, delivery=delivery)
    recorded = store.record_delivery(
        runtime.engine, SOURCE.parse(body, headers), dedup_key=SOURCE.dedup_key(body, headers), headers={}, payload=body
    )
    return recorded.item_key


def drain(runtime: Runtime, item: str = "acme/web#1", timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        runtime.sync.process_item("github", item)
        if not store.pending_for_item(runtime.engine, "github", item, now=float("inf")):
            return
        time.sleep(0.05)
    raise AssertionError("events still pending")


def edit_mapping(runtime: Runtime, old: str, new: str, name: str = "github.yaml") -> None:
    path = Path(runtime.settings.mappings_dir) / name
    content = path.read_text()
    assert old in content
    path.write_text(content.replace(old, new))
    time.sleep(0.01)
    os.utime(path)


def carries(issue: dict, external_id: str) -> bool:
    """The Zoho issue carries the external id in its custom field and as its description's marker."""
    return issue.get("external_id") == external_id and marker(external_id) in issue["description"].splitlines()


def statuses(runtime: Runtime) -> dict[str, int]:
    return store.count_by_status(runtime.engine)


def test_a_repository_rename_keeps_the_zoho_issue_and_updates_its_external_id(tmp_path, fake):
    runtime = make_runtime(tmp_path, fake)
    deliver(runtime, "issues", issues_event("opened"))
    deliver(runtime, "issue_comment", comment_event("created", comment_id=5, text="before", commented=1))
    drain(runtime)
    [issue] = fake.issues()
    assert carries(issue, "github:acme/web#1")
    # The repository is renamed: the next deliveries name acme/site, with the same ids.
    assert deliver(runtime, "issues", renamed("edited", title="after the rename", updated=5)) == "acme/web#1"
    # (the comments carry the issue as it was: older than the edit, so only their text counts)
    after_comment = renamed_comment("created", comment_id=6, text="after", commented=6, updated=0)
    assert deliver(runtime, "issue_comment", after_comment) == "acme/web#1"
    edited = renamed_comment("edited", comment_id=5, text="before, edited", commented=7, updated=0)
    deliver(runtime, "issue_comment", edited)
    drain(runtime)
    [after] = fake.issues()
    assert (after["id"], after["name"]) == (issue["id"], "after the rename")
    assert carries(after, "github:acme/site#1") and not carries(after, "github:acme/web#1")
    texts = [c["comment"] for c in fake.comments(issue["id"])]
    assert len(texts) == 2 and "before, edited" in texts[0] and "after" in texts[1]  # edited in place, not again
    link = store.get_link(runtime.engine, "github", "github:acme/site#1")  # operators look it up by the new id
    assert link is not None and link.zoho_issue_id == issue["id"] and link.item_key == "acme/web#1"
    assert store.get_link(runtime.engine, "github", "github:acme/web#1") is None
    assert statuses(runtime).get("failed", 0) == 0


def test_deliveries_reordered_and_repeated_around_a_rename_end_in_the_latest_state(tmp_path, fake):
    runtime = make_runtime(tmp_path, fake)
    deliver(runtime, "issues", issues_event("opened", title="t0"))
    drain(runtime)
    [issue] = fake.issues()
    # The newest edit (under the new name) arrives first, then an older one under the old name, twice;
    # a comment made after the rename is delivered twice, one made before it arrives last.
    deliver(runtime, "issues", renamed("edited", title="t9", updated=9), delivery="new-9")
    deliver(runtime, "issue_comment", renamed_comment("created", comment_id=2, text="second", commented=8, updated=0))
    deliver(runtime, "issues", issues_event("edited", title="t4", updated=4), delivery="old-4")
    deliver(runtime, "issues", issues_event("edited", title="t4", updated=4), delivery="old-4")  # redelivered
    deliver(runtime, "issue_comment", renamed_comment("created", comment_id=2, text="second", commented=8, updated=0))
    deliver(runtime, "issue_comment", comment_event("created", comment_id=1, text="first", commented=3, updated=0))
    drain(runtime)
    [after] = fake.issues()
    assert (after["id"], after["name"]) == (issue["id"], "t9") and carries(after, "github:acme/site#1")
    texts = [c["comment"] for c in fake.comments(issue["id"])]
    assert len(texts) == 2 and {"first", "second"} == {t.split("\n\n")[1] for t in texts}
    # A late old-name edit, older than what Zoho shows, changes nothing back (name nor external id).
    deliver(runtime, "issues", issues_event("edited", title="t5", updated=5))
    drain(runtime)
    [final] = fake.issues()
    assert final["name"] == "t9" and carries(final, "github:acme/site#1")
    assert statuses(runtime).get("failed", 0) == 0 and statuses(runtime).get("pending", 0) == 0


def test_a_transfer_moves_the_link_to_the_new_issue(tmp_path, fake):
    runtime = make_runtime(tmp_path, fake)
    deliver(runtime, "issues", issues_event("opened"))
    deliver(runtime, "issue_comment", comment_event("created", comment_id=1, text="in web", commented=1))
    drain(runtime)
    [issue] = fake.issues()
    transferred, opened = transfer_events(new_repo="acme/api", new_number=7, updated=10)
    assert deliver(runtime, "issues", transferred) == "acme/web#1"
    assert deliver(runtime, "issues", opened) == "acme/web#1"
    drain(runtime)
    # Later deliveries come from the new repository only, under the new issue's id and number.
    edited = issues_event("edited", repo="acme/api", number=7, title="edited in api", updated=12)
    assert deliver(runtime, "issues", edited) == "acme/web#1"
    deliver(
        runtime,
        "issue_comment",
        comment_event("created", repo="acme/api", number=7, comment_id=2, text="in api", commented=13, updated=0),
    )
    drain(runtime)
    [after] = fake.issues()  # not a second issue
    assert (after["id"], after["name"], after["project_id"]) == (issue["id"], "edited in api", WEB)  # keep: stays
    assert carries(after, "github:acme/api#7")
    assert ["in web" in c["comment"] for c in fake.comments(issue["id"])] == [True, False]
    assert "in api" in fake.comments(issue["id"])[1]["comment"]
    assert statuses(runtime).get("failed", 0) == 0


def test_a_transfer_delivered_out_of_order_and_twice_still_ends_on_one_issue(tmp_path, fake):
    runtime = make_runtime(tmp_path, fake)
    deliver(runtime, "issues", issues_event("opened", title="t0"))
    drain(runtime)
    [issue] = fake.issues()
    transferred, opened = transfer_events(new_repo="acme/api", new_number=7, updated=10, title="t10")
    # The new repository's opened arrives first, then a comment there, then the old repository's
    # transferred twice (two deliveries), then an old edit of the old repository that lost its way.
    deliver(runtime, "issues", opened)
    deliver(
        runtime,
        "issue_comment",
        comment_event(
            "created", repo="acme/api", number=7, comment_id=3, text="new home", commented=11, updated=10, title="t10"
        ),
    )
    deliver(runtime, "issues", transferred, delivery="t-1")
    deliver(runtime, "issues", transferred, delivery="t-2")
    deliver(runtime, "issues", issues_event("edited", title="t5", updated=5))
    drain(runtime)
    [after] = fake.issues()
    assert (after["id"], after["name"]) == (issue["id"], "t10") and carries(after, "github:acme/api#7")
    assert [("new home" in c["comment"]) for c in fake.comments(issue["id"])] == [True]
    assert statuses(runtime).get("failed", 0) == 0 and statuses(runtime).get("pending", 0) == 0


def test_an_external_id_template_change_moves_the_links_rows_with_it(tmp_path, fake):
    runtime = make_runtime(tmp_path, fake)
    deliver(runtime, "issues", issues_event("opened"))
    deliver(runtime, "issue_comment", comment_event("created", comment_id=1, text="hello", commented=1))
    drain(runtime)
    [issue] = fake.issues()
    edit_mapping(runtime, 'external_id: "github:{repository}#{number}"', 'external_id: "github:{issue_id}"')
    deliver(runtime, "issues", issues_event("edited", title="same issue", updated=5))
    deliver(runtime, "issue_comment", comment_event("edited", comment_id=1, text="hello again", commented=6))
    drain(runtime)
    [after] = fake.issues()
    assert after["id"] == issue["id"] and carries(after, f"github:{ISSUE_ID}")
    [comment] = fake.comments(issue["id"])  # the comment's link followed: edited, not posted again
    assert "hello again" in comment["comment"]
    link = store.get_link(runtime.engine, "github", f"github:{ISSUE_ID}")
    assert link is not None and link.zoho_issue_id == issue["id"]


def test_another_mapping_instance_keeps_the_zoho_issue(tmp_path, fake):
    runtime = make_runtime(tmp_path, fake)
    deliver(runtime, "issues", issues_event("opened"))
    drain(runtime)
    [issue] = fake.issues()
    folder = Path(runtime.settings.mappings_dir)
    content = (folder / "github.yaml").read_text()
    content = content.replace(
        'external_id: "github:{repository}#{number}"', 'external_id: "acme:{repository}/{number}"'
    )
    (folder / "acme.yaml").write_text(
        content.replace("source: github ", 'name: acme\nmatch: {source_project: ["acme/*"]}\nsource: github ')
    )
    (folder / "github.yaml").unlink()  # the admin split the file: the item is now the `acme` instance's
    time.sleep(0.01)
    deliver(runtime, "issues", issues_event("edited", title="by the acme instance", updated=5))
    drain(runtime)
    assert runtime.registry.for_event(parse("issues", issues_event("edited"))).name == "acme"
    [after] = fake.issues()
    assert (after["id"], after["name"]) == (issue["id"], "by the acme instance") and carries(after, "acme:acme/web/1")


def test_a_routing_change_with_move_moves_the_issue_and_comments_follow(tmp_path, fake):
    runtime = make_runtime(tmp_path, fake)
    edit_mapping(runtime, "on_route_change: keep", "on_route_change: move")
    deliver(runtime, "issues", issues_event("opened"))
    drain(runtime)
    [issue] = fake.issues()
    assert issue["project_id"] == WEB
    edit_mapping(runtime, f'acme/web: "{WEB}"', f'acme/web: "{API}"')
    deliver(runtime, "issues", issues_event("edited", title="moved", updated=5))
    deliver(runtime, "issue_comment", comment_event("created", comment_id=4, text="follows", commented=6, updated=4))
    drain(runtime)
    [after] = fake.issues()
    assert (after["id"], after["project_id"], after["name"]) == (issue["id"], API, "moved")
    [move] = fake.api_calls("POST", "/move")
    assert move["path"].endswith(f"/projects/{WEB}/issues/{issue['id']}/move") and move["json"] == {"to_project": API}
    assert ["follows" in c["comment"] for c in fake.comments(issue["id"])] == [True]
    comment_posts = [c for c in fake.api_calls("POST", "/comments")]
    assert f"/projects/{API}/" in comment_posts[-1]["path"]
    link = store.get_link(runtime.engine, "github", "github:acme/web#1")
    assert link is not None and link.project == API


def test_a_move_whose_answer_was_lost_is_not_sent_to_the_old_project_again(tmp_path, fake):
    runtime = make_runtime(tmp_path, fake)
    edit_mapping(runtime, "on_route_change: keep", "on_route_change: move")
    deliver(runtime, "issues", issues_event("opened"))
    drain(runtime)
    [issue] = fake.issues()
    edit_mapping(runtime, f'acme/web: "{WEB}"', f'acme/web: "{API}"')
    deliver(runtime, "issues", issues_event("edited", title="moved once", updated=5))
    fake.set_faults(error_500_after_commit_rate=1.0)  # Zoho moves it, the answer is lost
    runtime.sync.process_item("github", "acme/web#1")
    fake.set_faults()
    assert fake.issue(issue["id"])["project_id"] == API
    drain(runtime)
    [after] = fake.issues()
    assert (after["id"], after["project_id"], after["name"]) == (issue["id"], API, "moved once")
    assert store.get_link(runtime.engine, "github", "github:acme/web#1").project == API  # type: ignore[union-attr]
    assert statuses(runtime).get("failed", 0) == 0


def test_the_default_keep_leaves_the_issue_where_it_is(tmp_path, fake):
    runtime = make_runtime(tmp_path, fake)
    deliver(runtime, "issues", issues_event("opened"))
    drain(runtime)
    edit_mapping(runtime, f'acme/web: "{WEB}"', f'acme/web: "{API}"')
    deliver(runtime, "issues", issues_event("edited", title="kept", updated=5))
    drain(runtime)
    [after] = fake.issues()
    assert (after["project_id"], after["name"]) == (WEB, "kept") and fake.api_calls("POST", "/move") == []


def test_mappings_check_refuses_move_in_the_bugtracker_dialect(tmp_path):
    path = tmp_path / "github.yaml"
    shipped = (Path(__file__).resolve().parents[1] / "mappings" / "github.yaml").read_text()
    path.write_text(shipped.replace("on_route_change: keep", "on_route_change: move"))
    assert dialect_problems(path, "projects") == []
    [problem] = dialect_problems(path, "bugtracker")
    assert problem.key == "on_route_change" and "documents no move" in problem.message and problem.line


# -- upgrading a database whose items are keyed the old way -------------------------------------------------


def _as_before_the_upgrade(runtime: Runtime) -> None:
    """Turn the database back into what the previous version left: schema 0009, no identity bindings, links
    and events keyed `acme/web#N`, links' last fields without `repository_id` (it did not exist)."""
    with runtime.engine.begin() as conn:
        for row in conn.execute(select(db.links.c.id, db.links.c.last_fields)).all():
            if row.last_fields is None:
                continue
            fields = json.loads(row.last_fields)
            fields.pop("repository_id", None)
            conn.execute(db.links.update().where(db.links.c.id == row.id).values(last_fields=json.dumps(fields)))
        conn.execute(text("DROP TABLE item_identities"))
        conn.execute(text("ALTER TABLE links DROP COLUMN create_sent_at"))  # 0012
        conn.execute(text("DROP TABLE metric_deltas"))  # 0100
        conn.execute(text("UPDATE alembic_version SET version_num = '0009'"))
    runtime.engine.dispose()


def test_an_upgraded_database_keeps_old_keyed_items_on_their_zoho_issue_across_a_rename(tmp_path, fake):
    env = in_process_env(tmp_path, fake, "github")
    before = Runtime(load_settings(env))
    for number in (1, 2):
        deliver(before, "issues", issues_event("opened", number=number))
        drain(before, f"acme/web#{number}")
    deliver(before, "issue_comment", comment_event("created", comment_id=1, text="old", commented=1))
    drain(before)
    _as_before_the_upgrade(before)
    issues = {i["external_id"]: i["id"] for i in fake.issues()}
    after = Runtime(load_settings(env))  # migrates 0009 -> 0011: binds acme/web#N to its issue id
    with after.engine.connect() as conn:
        bound = dict(conn.execute(select(db.item_identities.c.identity, db.item_identities.c.item_key)).all())
    assert bound == {
        str(github_issue_id("acme/web", 1)): "acme/web#1",
        str(github_issue_id("acme/web", 2)): "acme/web#2",
    }
    # The repository is renamed before either item sees another delivery.
    assert deliver(after, "issues", renamed("edited", title="renamed after the upgrade", updated=5)) == "acme/web#1"
    deliver(after, "issue_comment", renamed_comment("edited", comment_id=1, text="old, edited", commented=6, updated=0))
    drain(after)
    second = issues_event(
        "edited", repo="acme/site", repo_id=WEB_ID, number=2, issue_id=github_issue_id("acme/web", 2), updated=5
    )
    assert deliver(after, "issues", second) == "acme/web#2"
    drain(after, "acme/web#2")
    assert len(fake.issues()) == 2  # no second issue for either
    one = fake.issue(issues["github:acme/web#1"])
    assert one["name"] == "renamed after the upgrade" and carries(one, "github:acme/site#1")
    [comment] = fake.comments(one["id"])
    assert "old, edited" in comment["comment"]
    assert carries(fake.issue(issues["github:acme/web#2"]), "github:acme/site#2")


def test_an_old_keyed_link_without_an_issue_id_is_adopted_by_its_key(tmp_path, fake):
    env = in_process_env(tmp_path, fake, "github")
    before = Runtime(load_settings(env))
    deliver(before, "issues", issues_event("opened"))
    drain(before)
    with before.engine.begin() as conn:  # a link whose fields and events say nothing of the issue id
        conn.execute(db.links.update().values(last_fields=None))
        conn.execute(db.events.update().values(event_json=text("replace(event_json, 'issue_id', 'was_id')")))
    _as_before_the_upgrade(before)
    after = Runtime(load_settings(env))
    with after.engine.connect() as conn:
        assert conn.execute(select(db.item_identities)).all() == []
    assert deliver(after, "issues", issues_event("edited", title="adopted", updated=5)) == "acme/web#1"
    drain(after)
    [issue] = fake.issues()
    assert issue["name"] == "adopted"
    with after.engine.connect() as conn:
        assert conn.execute(select(db.item_identities.c.item_key)).scalars().all() == ["acme/web#1"]


def test_the_stored_event_names_the_handle_and_the_identity(tmp_path, fake):
    runtime = make_runtime(tmp_path, fake)
    deliver(runtime, "issues", issues_event("opened"))
    deliver(runtime, "issues", renamed("edited", updated=5))
    [newest, _] = store.list_events(runtime.engine)
    assert (newest.item_key, newest.event.item_key, newest.event.identity) == (
        "acme/web#1",
        "acme/web#1",
        str(ISSUE_ID),
    )
    assert newest.event.fields["repository"] == "acme/site"  # what an admin reads: the current name, in the fields
    assert datetime.fromtimestamp(newest.source_ts, UTC) == newest.event.source_ts


def test_a_new_repository_delivery_before_the_transfer_is_folded_into_the_transferred_item(tmp_path, fake):
    """The new repository's edit arrives before either transfer delivery and starts an item of its own; while
    that item has no Zoho issue, the transfer folds it in, and a worker holding its claim stops before any
    create (its claim's generation moved on)."""
    from bridge.store import claims

    runtime = make_runtime(tmp_path, fake)
    deliver(runtime, "issues", issues_event("opened", title="t0"))
    drain(runtime)
    [issue] = fake.issues()
    early = issues_event("edited", repo="acme/api", number=7, title="edited in api first", updated=12)
    assert deliver(runtime, "issues", early) == "acme/api#7"  # nothing tells it is the transferred issue yet
    held = claims.claim_item(runtime.engine, "github", "acme/api#7", "a stalled worker", ttl=30)
    assert not isinstance(held, claims.Refused)
    transferred, opened = transfer_events(new_repo="acme/api", new_number=7, updated=10)
    assert deliver(runtime, "issues", transferred) == "acme/web#1"
    with pytest.raises(claims.ClaimLost), claims.fenced(runtime.engine, held[0]):  # no create can follow
        pass
    assert deliver(runtime, "issues", opened) == "acme/web#1"
    assert store.pending_for_item(runtime.engine, "github", "acme/api#7", now=float("inf")) == []
    drain(runtime)
    runtime.sync.process_item("github", "acme/api#7")  # the stray handle has nothing left to do
    [after] = fake.issues()
    assert (after["id"], after["name"]) == (issue["id"], "edited in api first") and carries(after, "github:acme/api#7")
    assert statuses(runtime).get("failed", 0) == 0 and statuses(runtime).get("pending", 0) == 0


def test_two_items_rendering_one_external_id_fail_with_a_reason_instead_of_colliding(tmp_path, fake):
    runtime = make_runtime(tmp_path, fake)
    deliver(runtime, "issues", issues_event("opened"))
    drain(runtime)
    edit_mapping(runtime, 'external_id: "github:{repository}#{number}"', 'external_id: "github:#{number}"')
    deliver(runtime, "issues", issues_event("edited", updated=2))  # the linked item takes github:#1
    drain(runtime)
    other = issues_event("opened", repo="acme/api", number=1, title="another #1")
    assert deliver(runtime, "issues", other) == "acme/api#1"
    drain(runtime, "acme/api#1")
    [failed] = store.list_events(runtime.engine, status="failed")
    assert "external id 'github:#1' is already item acme/web#1's" in (failed.last_error or "")
    assert failed.attempts == 1 and len(fake.issues()) == 1
