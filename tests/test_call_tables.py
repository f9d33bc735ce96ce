"""Every outside call declared once: the tables are well formed, `docs/calls.md` is theirs, the clients refuse a
call no table declares, and every fake checks what it receives against the same tables (tests/conftest.py
fails the session on a call no table declares)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from bridge.outbound.budget import Budgets
from bridge.outbound.docs import all_tables, render
from bridge.outbound.errors import UndeclaredCall
from bridge.sources.bugherd import calls as bugherd_calls
from bridge.sources.bugherd.api import BugHerdClient
from bridge.sources.bugzilla import calls as bugzilla_calls
from bridge.sources.bugzilla.api import BugzillaClient
from bridge.sources.github import calls as github_calls
from bridge.store import schema as db
from testkit.fakes.bugherd import FakeBugHerd
from testkit.fakes.bugzilla import FakeBugzilla
from testkit.fakes.github import FakeGitHub

DOC = Path(__file__).resolve().parents[1] / "docs" / "calls.md"
SOURCES = {"github": github_calls, "bugzilla": bugzilla_calls, "bugherd": bugherd_calls}


def test_docs_calls_md_is_the_tables():
    assert DOC.read_text() == render(), "regenerate it: python -m bridge.outbound.docs > docs/calls.md"


@pytest.mark.parametrize("table", all_tables(), ids=lambda t: t.system)
def test_each_call_is_declared_once_with_where_it_is_documented(table):
    names = [c.name for c in table.calls]
    assert len(names) == len(set(names))
    routes = [(c.method, c.path) for c in table.calls]
    assert len(routes) == len(set(routes))
    for call in table.calls:
        assert call.method in ("GET", "POST", "PUT", "PATCH", "DELETE") and call.documented.strip()
        assert call.safe or call.method != "GET"  # a read is always safe to repeat
        if call.creates:
            assert not call.safe  # a create is never repeated blindly: it is looked up by its marker


@pytest.mark.parametrize("system", SOURCES)
def test_a_source_call_spends_its_systems_budget_and_only_registered_ones(system):
    module = SOURCES[system]
    registered = {limit.key for limit in module.LIMITS}
    for call in module.TABLE.calls:
        assert system in call.budgets and set(call.budgets) <= registered, call


def test_github_pacing_is_githubs_documented_guidance():
    limits = {limit.key: limit for limit in github_calls.LIMITS}
    assert (limits["github.content"].count, limits["github.content"].window) == (1, 1.0)  # one a second
    assert (limits["github.content.minute"].count, limits["github.content.minute"].window) == (80, 60.0)
    assert (limits["github.content.hour"].count, limits["github.content.hour"].window) == (500, 3600.0)
    writes = [c for c in github_calls.TABLE.calls if c.method != "GET"]
    assert writes and all("github.content" in c.budgets for c in writes)
    assert {c.name for c in writes if "github.content.minute" in c.budgets} == {"comment.create"}
    (bugherd,) = bugherd_calls.LIMITS
    assert (bugherd.count, bugherd.window, bugherd.burst) == (60, 60.0, 10)  # 002:29


@pytest.fixture
def budgets(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path}/b.db")
    db.ensure_schema(engine)
    yield Budgets(engine)
    engine.dispose()


def test_the_clients_refuse_an_undeclared_call_and_send_nothing(budgets):
    with FakeBugzilla() as bz, FakeBugHerd() as bh:
        with pytest.raises(UndeclaredCall, match="POST /rest/bug/35/comment"):
            BugzillaClient(bz.base_url, "k", budgets=budgets).send("POST", "bug/35/comment", body={"comment": "x"})
        with pytest.raises(UndeclaredCall, match=r"DELETE /api_v2/webhooks/3\.json"):
            BugHerdClient("k", budgets=budgets, base_url=bh.base_url).request("DELETE", "webhooks/3.json")
        assert bz.calls() == [] and bh.calls() == []


def test_the_fakes_log_a_request_no_table_declares(probing_fakes):
    with FakeGitHub() as github, FakeBugzilla() as bz, FakeBugHerd() as bh:
        assert github.tables == (github_calls.TABLE,) and bz.tables == (bugzilla_calls.TABLE,)
        assert bh.tables == (bugherd_calls.TABLE,)
        requests.get(github.base_url + "/user", timeout=5)
        requests.get(github.base_url + "/repos/acme/web/issues/3/labels/area%2Fui", timeout=5)  # declared: DELETE
        requests.delete(github.base_url + "/repos/acme/web/issues/3/labels/area%2Fui", timeout=5)
        requests.post(bz.base_url + "/rest/bug/35/comment", json={}, timeout=5)
        requests.get(bh.base_url + "/api_v2/organization.json", timeout=5)
    logged = [json.loads(line) for line in probing_fakes.read_text().splitlines()]
    assert [(e["fake"], e["method"], e["path"]) for e in logged] == [
        ("FakeGitHub", "GET", "/user"),
        ("FakeGitHub", "GET", "/repos/acme/web/issues/3/labels/area/ui"),
        ("FakeBugzilla", "POST", "/rest/bug/35/comment"),
        ("FakeBugHerd", "GET", "/api_v2/organization.json"),
    ]
