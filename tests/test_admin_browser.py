"""The admin page in a real headless browser (Debian's chromium driven by playwright) against real processes.

An operator logs in, sees an event Zoho refused for good (with Zoho's reason), replays it, and watches it
succeed: gunicorn serves the pages, a Celery worker does the replay, FakeZoho ends up with the issue.
Skipped, saying why, when chromium or playwright is missing; `.ci/run` installs both.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from testkit.factories import issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import BridgeStack, wait_for

TOKEN = "browser-admin-token-0123456789abcdef"
TITLE = "Checkout <b>total</b> is wrong"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def _chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM_PATH"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture
def browser_page():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]' (see .ci/run)"
    )
    executable = _chromium()
    if executable is None:
        pytest.skip("chromium is not installed: apt-get install -y chromium (.ci/run does it)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(java_script_enabled=False)  # the admin pages need no script
            page = context.new_page()
            page.set_default_timeout(15_000)
            yield page
        finally:
            browser.close()


@pytest.mark.e2e
def test_login_see_a_failed_event_replay_it_and_see_it_succeed(tmp_path, browser_page):
    page = browser_page
    fake = FakeZoho().start()
    stack = BridgeStack(tmp_path, fake, extra_env={"ADMIN_TOKEN": TOKEN})
    try:
        stack.start()
        # Zoho refuses the first API call with a 400: a 4xx retrying cannot fix, so the event fails for good.
        fake.fail_next(1, status=400)
        assert stack.github("issues", issues_event("opened", number=42, title=TITLE)).status_code == 200
        wait_for(lambda: stack.counts().get("failed") == 1, 60, what="the event to fail")
        assert fake.issues() == []

        # Log in: the admin pages send a stranger to the login form, and refuse a wrong token.
        page.goto(stack.base_url + "/admin/failed")
        assert "/admin/login" in page.url
        page.fill("#token", "not-the-token")
        page.click("button[type=submit]")
        assert page.locator("[role=alert]").inner_text() == "Wrong token."
        page.fill("#token", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url("**/admin/failed")

        # The failed event, with Zoho's reason.
        row = page.locator("#failed tbody tr[data-status=failed]")
        assert row.count() == 1
        text = row.inner_text()
        assert "acme/web#42" in text and "400" in text, text
        assert "BAD_REQUEST" in text or "Bad Request" in text, text
        event_id = row.get_attribute("id").removeprefix("event-")
        page.screenshot(path=str(tmp_path / "admin-failed.png"), full_page=True)

        # Replay it: the event page says so, and a worker takes it up.
        row.get_by_role("button", name="Replay").click()
        page.wait_for_url(f"**/admin/events/{event_id}")
        assert f"Event {event_id} is back in the queue." in page.locator(".flash").inner_text()

        deadline = time.time() + 60
        while page.locator("#event-status").get_attribute("data-status") != "done":
            assert time.time() < deadline, page.locator("#summary").inner_text()
            stack.assert_alive()
            time.sleep(0.5)
            page.reload()
        page.screenshot(path=str(tmp_path / "admin-done.png"), full_page=True)

        # The issue exists in Zoho, exactly once, and the look-up page finds it by its external id.
        issues = fake.issues()
        assert len(issues) == 1 and issues[0]["name"] == TITLE, issues
        create = page.locator("#calls tbody tr", has_text="POST /api/v3/portal/")  # the replay's create call
        assert create.count() == 1 and create.locator("td").nth(2).inner_text() in ("200", "201")
        assert "400" in page.locator("#calls").inner_text()  # the refused call stays in the history
        page.goto(stack.base_url + "/admin/lookup")
        page.fill("#q", "github:acme/web#42")
        page.click("form button[type=submit] >> text=Look up")
        assert issues[0]["id"] in page.locator(".zoho-issue").inner_text()
        assert page.locator(".history tr[data-status=done]").count() == 1
        assert page.locator(".history tr[data-status=failed]").count() == 0

        # Log out: the pages are closed again.
        page.click("text=Log out")
        page.goto(stack.base_url + "/admin/")
        assert "/admin/login" in page.url
        assert (tmp_path / "admin-failed.png").stat().st_size > 0
        assert (tmp_path / "admin-done.png").stat().st_size > 0
    finally:
        stack.stop()
        fake.stop()
