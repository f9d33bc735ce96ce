"""`bridge zoho verify --project ID` against the fake Zoho in every variant, the printed table checked."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from bridge.cli import main
from bridge.targets.zoho.knowledge import KEY
from testkit.fakes.zoho import FakeZoho
from testkit.harness import REPO

PROJECT = "1752587000000097024"


def run_verify(tmp_path, fake: FakeZoho, dialect: str = "projects", *extra: str, project: str = PROJECT):
    mappings = tmp_path / "mappings"
    mappings.mkdir(exist_ok=True)
    shutil.copy(REPO / "mappings" / "examples" / "github.yaml", mappings / "github.yaml")
    env = {
        "BRIDGE_DATA_DIR": str(tmp_path / "var"),
        "MAPPINGS_DIR": str(mappings),
        "BROKER_URL": "redis://127.0.0.1:1/0",
        "ZOHO_DIALECT": dialect,
        "ZOHO_API_BASE": fake.base_url,
        "ZOHO_ACCOUNTS_URL": fake.base_url,
        "ZOHO_CLIENT_ID": fake.client_id,
        "ZOHO_CLIENT_SECRET": fake.client_secret,
        "ZOHO_REFRESH_TOKEN": fake.refresh_token,
        "ZOHO_PORTAL_ID": fake.portal_id,
        "ZOHO_RATE_LIMIT_PER_MINUTE": "0",
    }
    result = CliRunner().invoke(main, ["zoho", "verify", "--project", project, *extra], env=env)
    return result


def rows(output: str) -> dict[str, str]:
    """{step: the rest of its table line}."""
    table = {}
    for line in output.splitlines():
        for step in (
            "token",
            "option lists",
            "custom field metadata",
            "one user by email",
            "create test issue (custom field by API name)",
            "create test issue (without custom field)",
            "create test issue",
            "read test issue",
            "find by description marker",
            "find by cfid filter",
            "filter by API name",
            "update test issue",
            "date-only due date",
            "tag add",
            "tag remove",
            "comment add",
            "comment edit",
            "comment find (paged list)",
            "comment delete",
            "close test issue",
            "delete test issue",
        ):
            if line.startswith(step + " ") and step not in table:
                table[step] = line[len(step) :] + " "
                break
    return table


def learned(tmp_path, fake) -> dict:
    import json

    from bridge import store
    from bridge.store import schema as db

    engine = db.make_engine(f"sqlite:///{tmp_path / 'var' / 'bridge.db'}")
    try:
        return json.loads(store.kv_get(engine, KEY + fake.portal_id) or "{}")
    finally:
        engine.dispose()


@pytest.mark.parametrize("custom_field", ["accepted", "ignored", "refused"])
@pytest.mark.parametrize("filter_api_name", ["accepted", "refused"])
def test_verify_projects_per_variant(tmp_path, custom_field, filter_api_name):
    status_key = "status_deatils" if custom_field == "ignored" else "status_details"
    date_only = "refused" if filter_api_name == "refused" else "accepted"
    variants = dict(custom_field=custom_field, filter_api_name=filter_api_name, status_key=status_key)
    with FakeZoho(host_dialect="projects", date_only_due=date_only, **variants) as fake:
        result = run_verify(tmp_path, fake, "projects", "--tag", "1752587000000555001")
        assert result.exit_code == 0, result.output
        table = rows(result.output)
        assert "200" in table["token"] or " ok" in table["token"]
        assert "status list read from " + status_key in table["option lists"]
        if custom_field == "refused":
            assert "refused" in table["create test issue (custom field by API name)"]
            assert "the description marker carries the id" in table["create test issue (without custom field)"]
        else:
            assert " ok " in table["create test issue (custom field by API name)"]
            verdict = "ok" if custom_field == "accepted" else "ignored"
            assert f" {verdict} " in table["read test issue"]
            if custom_field == "ignored":
                assert (
                    "custom field ignored by Zoho: the description marker carries the external id"
                    in (table["read test issue"])
                )
        assert " ok " in table["find by description marker"] and "crash-window lookup works" in result.output
        if custom_field == "accepted":
            assert " ok " in table["find by cfid filter"]
        if custom_field != "refused":
            assert (" refused " in table["filter by API name"]) == (filter_api_name == "refused")
        assert (" refused " in table["date-only due date"]) == (date_only == "refused")
        for step in ("update test issue", "tag add", "tag remove", "comment add", "comment edit", "comment delete"):
            assert " ok " in table[step], (step, result.output)
        assert " ok " in table["comment find (paged list)"] and " ok " in table["close test issue"]
        assert "204" in table["delete test issue"]
        assert fake.issues() == []  # cleaned up
        facts = learned(tmp_path, fake)
        assert facts["custom_field"] == custom_field and facts["status_key"] == status_key
        assert facts["due_date"] == ("timestamp" if date_only == "refused" else "timestamp+date")
        if custom_field == "accepted":
            assert facts["filter_cfid"] == "accepted" and facts["cfid"] == "1752587000000080001"


def test_verify_bugtracker_on_its_own_host(tmp_path):
    with FakeZoho(host_dialect="bugtracker") as fake:
        result = run_verify(tmp_path, fake, "bugtracker")
        assert result.exit_code == 0, result.output
        table = rows(result.output)
        assert "201" in table["create test issue"] and " ok " in table["find by description marker"]
        assert "PUT" in table["update test issue"] and " ok " in table["close test issue"]
        assert fake.issues() == []


def test_verify_fails_and_still_cleans_up_when_a_step_is_refused(tmp_path):
    with FakeZoho(host_dialect="projects") as fake:
        original = fake._v3_comment_create

        def refuse(ctx):
            from testkit.fakes.zoho import ApiError, v3_error

            raise ApiError(403, v3_error(403, "FORBIDDEN", "You do not have permission to add comments"))

        fake._v3_comment_create = refuse
        result = run_verify(tmp_path, fake, "projects")
        fake._v3_comment_create = original
        assert result.exit_code == 1
        table = rows(result.output)
        assert "403" in table["comment add"] and "FAILED" in table["comment add"]
        assert "comments cannot be synced" in table["comment add"]
        assert "204" in table["delete test issue"] and fake.issues() == []
        assert "cannot work with this portal" in result.output


def test_verify_with_tokens_zoho_refuses_names_the_configuration(tmp_path):
    with FakeZoho(refuse_tokens=True) as fake:
        result = run_verify(tmp_path, fake, "projects")
        assert result.exit_code == 1
        assert "scopes" in result.output and "data centre" in result.output
        # one grant for the token step, one refresh after the refusal, then none
        assert fake.token_refreshes <= 2 and fake.issues() == []


@pytest.mark.parametrize("dialect", ["projects", "bugtracker"])
def test_verify_covers_every_call_the_bridge_can_make(tmp_path, dialect):
    """The poll's list, the assignment, attachment upload and association, the move and the GET's shape."""
    with FakeZoho(host_dialect=dialect) as fake:
        result = run_verify(tmp_path, fake, dialect)
        assert result.exit_code == 0, result.output
        lines = {line.split("  ")[0]: line + " " for line in result.output.splitlines()}
        for step in ("poll list (changes made in Zoho)", "assign", "attachment upload", "read test issue"):
            assert " ok " in lines[step], (step, result.output)
        assert "last_modified_time" in lines["poll list (changes made in Zoho)"] or dialect == "bugtracker"
        if dialect == "projects":
            assert " ok " in lines["attachment associate"] and " ok " in lines["move"] and " ok " in lines["move back"]
            moves = fake.api_calls("POST", "/move")
            assert [c["json"]["to_project"] for c in moves] == ["1752587000000098001", PROJECT]  # there and back
        else:
            assert "skipped" in lines["move"] and "{bugs: [bug]}" in lines["read test issue"]
            assert learned(tmp_path, fake)["bug_answer"] == "wrapped"
        assert "not met" in lines["throttle form"]
        assert fake.issues() == []


def test_verify_reads_a_bare_bug_and_a_lagging_search_index(tmp_path):
    with FakeZoho(host_dialect="bugtracker", search_lag=30) as fake:
        fake.set_variant(bug_answer="bare")
        result = run_verify(tmp_path, fake, "bugtracker")
        assert result.exit_code == 0, result.output
        table = rows(result.output)
        assert "the bug itself" in table["read test issue"]
        assert "index lags" in table["find by description marker"]  # found through the bug list instead
        assert learned(tmp_path, fake)["search"] == "lags" and fake.issues() == []


@pytest.mark.parametrize("form", ["429", "400", "200"])
def test_verify_reports_the_throttle_form_it_meets_and_stops(tmp_path, form):
    with FakeZoho(host_dialect="projects", v3_limit=8, v3_window=120, block_seconds=1200, throttle=form) as fake:
        result = run_verify(tmp_path, fake, "projects")
        assert result.exit_code == 1
        throttle = next(line for line in result.output.splitlines() if line.startswith("throttle form"))
        title = "TOO_MANY_REQUESTS" if form == "429" else "URL_ROLLING_THROTTLES_LIMIT_EXCEEDED"
        assert f"met: HTTP {form} {title}" in throttle, result.output
        assert "Zoho throttled the run" in result.output and "not tried: Zoho throttled this run" in result.output
        assert len(fake.api_calls()) == 9  # the eight allowed and the one refused: nothing into the block
        assert "delete test issue" in result.output and "by hand" in result.output
        assert learned(tmp_path, fake)["throttle_form"].startswith(f"HTTP {form}")


def test_a_verify_of_a_wrong_project_changes_nothing_the_workers_know(tmp_path):
    """Bad input changes nothing: a run that makes no test issue (here a project id that does not exist) settles
    nothing, so what an earlier run stored stays. Before, it was wiped at the start and `custom_field=refused` was
    stored from the failed create, whatever its cause: every worker then left the custom field out."""
    with FakeZoho(host_dialect="projects", custom_field="accepted") as fake:
        assert run_verify(tmp_path, fake, "projects").exit_code == 0
        before = learned(tmp_path, fake)
        assert before["custom_field"] == "accepted" and before["cfid"]
        result = run_verify(tmp_path, fake, "projects", project="999")
        assert result.exit_code == 1, result.output
        assert "nothing stored" in result.output and "learned (stored" not in result.output
        assert learned(tmp_path, fake) == before
