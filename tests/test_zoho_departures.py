"""Each Zoho departure issue 20 lists, against a fake that follows the documents (testkit/fakes/zoho.py):
the poll's paging without `has_next_page`, `conflict: zoho_wins` in the BugTracker dialect, `mappings check`'s
users in BugTracker, the BugTracker poll's share of the daily quota, an assignee Zoho refuses, and a missing
issue answered with 400 instead of 404."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import select

from bridge import store
from bridge.cli import main
from bridge.core import talkback, zoho_poll
from bridge.core.apply import Applier
from bridge.core.claim import ClaimedItem
from bridge.mapping.loader import load_mapping
from bridge.mapping.model import IssueDraft
from bridge.process.runtime import Runtime
from bridge.settings import load_settings
from bridge.sources import KNOWN_FIELDS
from bridge.sources.github.webhook import GitHubSource
from bridge.store import Link, claims
from bridge.store import schema as db
from bridge.targets.zoho.client import ZohoClient
from testkit.factories import github_request, issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import GITHUB_SECRET, REPO, in_process_env

PORTAL, WEB = "739121528", "1752587000000097024"


def client_for(tmp_path: Path, fake: FakeZoho, **extra: str) -> ZohoClient:
    settings = load_settings(in_process_env(tmp_path, fake, "github", **extra))
    engine = db.make_engine(settings.database_url)
    db.ensure_schema(engine)
    return ZohoClient(settings, engine)


def token(fake: FakeZoho) -> dict[str, str]:
    return {"Authorization": f"Zoho-oauthtoken {fake.mint_token()}"}


def make_issues(fake: FakeZoho, n: int, kind: str = "issues") -> list[str]:
    path = f"{fake.base_url}/api/v3/portal/{PORTAL}/projects/{WEB}/{kind}"
    key = "name" if kind == "issues" else "title"
    headers, ids = token(fake), []
    with requests.Session() as http:
        for i in range(n):
            answer = http.post(path, json={key: f"issue {i}"}, headers=headers, timeout=10).json()
            ids.append(str(answer["bugs"][0]["id"] if kind == "bugs" else answer["id"]))
    fake.reset_rate_window()  # set-up calls: not the bridge's budget
    return ids


# -- the Zoho poll pages until a short page or the mark, not while `has_next_page` says so ---------------------


@pytest.mark.parametrize("page_info", ["documented", "has_next_page"])
def test_the_poll_reads_every_changed_issue_without_has_next_page(tmp_path, page_info):
    with FakeZoho(issue_page_info=page_info) as fake:
        ids = make_issues(fake, 150)
        client = client_for(tmp_path, fake)
        changed = zoho_poll.changed_issues(client, PORTAL, WEB, 0.0)
        assert sorted(i["id"] for i in changed) == sorted(ids)  # not the first 100 only (001:3554)
        assert [zoho_poll.modified_ts(i) for i in changed] == sorted(zoho_poll.modified_ts(i) for i in changed)
        time.sleep(1.1)
        mark = time.time() - 0.5
        for issue_id in ids[:3]:
            fake.person_sets_status(issue_id, "Closed")
        reads = len(fake.api_calls("GET"))
        changed = zoho_poll.changed_issues(client, PORTAL, WEB, mark)
        assert sorted(i["id"] for i in changed) == sorted(ids[:3])
        assert len(fake.api_calls("GET")) - reads == 1  # one page: it stops at the first issue older than the mark


# -- conflict: zoho_wins in the BugTracker dialect -------------------------------------------------------------

REVERSE = "\nreverse:\n  status:\n    Closed: {close: completed}\nconflict: zoho_wins\n"


@pytest.mark.parametrize("answer", ["wrapped", "bare"])
def test_zoho_wins_applies_in_the_bugtracker_dialect(tmp_path, answer):
    with FakeZoho(host_dialect="bugtracker") as fake:
        fake.set_variant(bug_answer=answer)
        [bug] = make_issues(fake, 1, "bugs")
        client = client_for(tmp_path, fake, ZOHO_DIALECT="bugtracker")
        path = tmp_path / "github.yaml"
        path.write_text((REPO / "mappings" / "examples" / "github.yaml").read_text() + REVERSE)
        mapping = load_mapping(path, known_fields=KNOWN_FIELDS)
        fields = {"state": "open", "title": "issue 0"}
        link = Link("github", "github:acme/web#1", "acme/web#1", PORTAL, WEB, bug, "linked", 1.0, "h", fields)
        draft = IssueDraft(PORTAL, WEB, "github:acme/web#1", None, "issue 0", "d", options={"status": "Closed"})
        fake.person_sets_status(bug, "In Progress")  # a person in Zoho, while the source closes it
        claimed = claims.claim_item(client.engine, "github", "acme/web#1", "test", 60.0)
        assert not isinstance(claimed, claims.Refused)
        item = ClaimedItem(client.engine, *claimed, renewed=time.monotonic())
        guarded = talkback.guard_status(Applier(client.settings, client), item, mapping, link, draft)
        assert "status" not in guarded.options  # Zoho keeps its status: the rule is zoho_wins


# -- mappings check: users in BugTracker through its user list ------------------------------------------------


def test_mappings_check_in_bugtracker_reads_the_user_list_not_users_by_email(tmp_path):
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    shutil.copy(REPO / "mappings" / "examples" / "github.yaml", mappings / "github.yaml")
    with open(mappings / "github.yaml", "a", encoding="utf-8") as out:
        out.write("\nusers:\n  octocat: alice@example.com\n  hubot: nobody@example.com\n")
    with FakeZoho(host_dialect="bugtracker") as fake:
        env = {
            "BRIDGE_DATA_DIR": str(tmp_path / "var"),
            "MAPPINGS_DIR": str(mappings),
            "BROKER_URL": "redis://127.0.0.1:1/0",
            "ZOHO_DIALECT": "bugtracker",
            "ZOHO_API_BASE": fake.base_url,
            "ZOHO_ACCOUNTS_URL": fake.base_url,
            "ZOHO_CLIENT_ID": fake.client_id,
            "ZOHO_CLIENT_SECRET": fake.client_secret,
            "ZOHO_REFRESH_TOKEN": fake.refresh_token,
            "ZOHO_RATE_LIMIT_PER_MINUTE": "0",
        }
        result = CliRunner().invoke(main, ["mappings", "check", str(mappings)], env=env)
        assert "users.hubot: nobody@example.com is not a user of Zoho project" in result.output, result.output
        assert "alice@example.com is not" not in result.output and "Zoho unreachable" not in result.output
        assert fake.api_calls(path_contains="/users/") == []  # only Projects v3 documents users/{email}
        assert fake.api_calls(path_contains="/users")  # the project's user list (000:39)


# -- BugTracker's reverse poll stays within its share of the plan's daily quota --------------------------------


def test_the_bugtracker_poll_keeps_within_its_share_of_the_daily_quota(tmp_path):
    with FakeZoho(host_dialect="bugtracker") as fake:
        make_issues(fake, 400, "bugs")
        client = client_for(tmp_path, fake, ZOHO_DIALECT="bugtracker", ZOHO_POLL_SECONDS="60")
        before = len(fake.api_calls("GET"))
        assert len(zoho_poll.changed_issues(client, PORTAL, WEB, 0.0)) == 400
        pages = len(fake.api_calls("GET")) - before
        assert pages == 5  # 4 full pages of 100 and the empty one that ends the list (000:1267-1298)
        # Free plan: 5,000 calls a day, 20% for the poll: 1,000 a day, 5 per poll: one poll per 432 s, not 60 s
        assert zoho_poll.changed_issues(client, PORTAL, WEB, 0.0) == []
        assert len(fake.api_calls("GET")) - before == pages  # not due: no call
        lines = "\n".join(client.poll_status_lines())
        assert "every 432 s" in lines and "20%" in lines and "5,000" in lines and "400 bugs" in lines
        env = in_process_env(tmp_path, fake, "github", ZOHO_DIALECT="bugtracker", ZOHO_POLL_SECONDS="60")
        shown = CliRunner().invoke(main, ["status"], env=env)
        assert shown.exit_code == 0 and "zoho reverse poll:" in shown.output and "every 432 s" in shown.output
        with client.engine.begin() as conn:  # the interval passes
            conn.execute(db.kv.update().where(db.kv.c.key.like("zoho.poll%")).values(value="{}"))
        assert len(zoho_poll.changed_issues(client, PORTAL, WEB, 0.0)) == 400


# -- an assignee Zoho refuses leaves the issue unassigned, with a note -------------------------------------------

ASSIGNEE = '\n  assignee: "{assignee}@example.com"\n'


@pytest.mark.parametrize("dialect", ["projects", "bugtracker"])
def test_an_assignee_zoho_refuses_leaves_the_issue_unassigned_with_a_note(tmp_path, dialect):
    with FakeZoho(refuse_assignees={"bob@example.com"}) as fake:
        env = in_process_env(tmp_path, fake, "github", ZOHO_DIALECT=dialect)
        mapping = Path(env["MAPPINGS_DIR"]) / "github.yaml"
        text = mapping.read_text().replace("\nfields:\n", "\nfields:" + ASSIGNEE, 1)
        if dialect == "bugtracker":
            text = text.replace("  external_id_field: external_id", "")
        mapping.write_text(text)
        runtime = Runtime(load_settings(env))
        source = GitHubSource(GITHUB_SECRET)
        body, headers = github_request(GITHUB_SECRET, "issues", issues_event("opened", assignee="bob"))
        event_id, _ = store.record_delivery(
            runtime.engine, source.parse(body, headers), dedup_key="d1", headers={}, payload=body
        )
        runtime.sync.process_item("github", "acme/web#1")
        [issue] = fake.issues()
        assert not issue.get("assignee")
        with runtime.engine.connect() as conn:
            row = conn.execute(select(db.events.c.status, db.events.c.notes).where(db.events.c.id == event_id)).one()
        assert row.status == "done", row
        assert "bob@example.com" in (row.notes or "") and "unassigned" in (row.notes or "")
        refused = [c for c in fake.api_calls("POST") if c["status"] == 400]
        assert len(refused) == 1  # one refusal, then the create without the assignee


# -- a missing issue answering 400 instead of 404 ---------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["projects", "bugtracker"])
def test_a_missing_issue_answered_with_400_is_gone_for_delete_and_the_re_check(tmp_path, dialect):
    with FakeZoho(missing_issue="400") as fake:
        client = client_for(tmp_path, fake, ZOHO_DIALECT=dialect)
        gone = "1752587000000199999"
        kind = "bugs" if dialect == "bugtracker" else "issues"
        answer = requests.get(
            f"{fake.base_url}/api/v3/portal/{PORTAL}/projects/{WEB}/{kind}/{gone}", headers=token(fake), timeout=5
        )
        assert answer.status_code == 400  # the variant answers a missing issue with 400
        assert client.get_issue(PORTAL, WEB, gone) is None  # the re-check: gone
        client.delete_issue(PORTAL, WEB, gone)  # gone already is fine
        refused = json.dumps(answer.json())
        assert "issue" in refused or "6006" in refused


# -- settings/fields in each shape the seed shows ---------------------------------------------------------------


@pytest.mark.parametrize("shape", ["module_fields", "empty", "extended"])
def test_custom_field_metadata_in_each_shape(tmp_path, shape):
    with FakeZoho(fields_answer=shape) as fake:
        client = client_for(tmp_path, fake)
        names = [f["api_name"] for f in client.custom_fields(PORTAL)]
        assert names == ([] if shape == "empty" else ["external_id"])  # the issue's own fields are not custom
