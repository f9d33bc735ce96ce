"""The item page and the front page's budget charts in a real headless chromium, at a phone's and a desktop's width:
readable, no sideways scroll, no console error (a CSP refusal is one), screenshots kept under the test's temporary
folder (item-375.png, budgets-1280.png, …; the paths are printed)."""

from __future__ import annotations

import pytest

from testkit.factories import comment_event, issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import BridgeStack, wait_for
from tests.test_front_browser import WIDTHS, _no_sideways_scroll, browser  # noqa: F401  (the fixture)

pytestmark = pytest.mark.e2e
TOKEN = "item-admin-token-0123456789abcdef"
LONG = "Checkout total is wrong when a coupon and a gift card are combined on https://shop.example/checkout/" * 2


def test_item_page_and_budget_charts_at_narrow_and_wide_widths(tmp_path, browser):  # noqa: F811
    fake = FakeZoho().start()
    stack = BridgeStack(tmp_path, fake, extra_env={"ADMIN_TOKEN": TOKEN})
    try:
        stack.start()
        stack.github("issues", issues_event("opened", number=9, title=LONG))
        stack.github("issue_comment", comment_event("created", comment_id=90, text="x" * 400, commented=4, number=9))
        wait_for(lambda: fake.issues(), 60, what="the issue")
        stack.wait_idle()  # #9's comment posted: the refusal below is for #10's create, whatever the timing
        fake.fail_matching("POST", r"/issues$", 1, status=400)
        stack.github("issues", issues_event("opened", number=10, title="Refused"))
        wait_for(lambda: stack.counts().get("failed") == 1, 60, what="the refused event")
        stack.wait_idle()
        assert stack.cli("pause", "bugherd").returncode == 0
        shots = []
        for width in WIDTHS:
            context = browser.new_context(viewport={"width": width, "height": 900})
            page = context.new_page()
            page.set_default_timeout(15_000)
            errors: list[str] = []
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)  # noqa: B023
            page.on("pageerror", lambda exc: errors.append(str(exc)))  # noqa: B023
            page.goto(stack.base_url + "/admin/login?next=/admin/")
            page.fill("#token", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_url("**/admin/")

            # The front page: one chart per outside system, the backlog, the pause.
            assert page.locator("#budgets svg.chart").count() == 4
            zoho = page.locator("#budget-zoho")
            assert "limit" in zoho.inner_text() and zoho.locator("svg rect").count() > 1  # bars drawn
            assert "source bugherd" in page.locator("#pauses").inner_text().replace("\n", " ")
            box = page.locator("#budget-zoho svg.chart").bounding_box()
            assert box is not None and box["width"] >= min(250, width - 60) and box["height"] >= 40, box
            _no_sideways_scroll(page)
            shot = tmp_path / f"budgets-{width}.png"
            page.screenshot(path=str(shot), full_page=True)
            shots.append(shot)

            # From the events list to the item's page: its verdict, what happens next, its story.
            page.locator("#events a", has_text="acme/web#9").first.click()
            page.wait_for_url("**/admin/items/github/**")
            assert page.locator("#verdict").inner_text().startswith("In Zoho: issue")
            assert page.locator("#next li").count() >= 1
            story = page.locator("#story tr.entry")
            assert story.count() >= 6
            assert page.locator("#story tr[data-kind=zoho]").count() >= 2
            verdict = page.locator("#verdict").bounding_box()
            assert verdict is not None and verdict["width"] >= width * 0.6, verdict  # readable, not a sliver
            what = page.locator("#story td.what").first.bounding_box()
            assert what is not None and what["width"] >= min(200, width * 0.5), what
            _no_sideways_scroll(page)
            shot = tmp_path / f"item-{width}.png"
            page.screenshot(path=str(shot), full_page=True)
            shots.append(shot)

            # The search box takes a URL; the failed item says why it is not in Zoho.
            page.fill("header input[name=q]", "https://github.com/acme/web/issues/10")
            page.press("header input[name=q]", "Enter")
            page.locator("a.item-page").click()
            assert "Not in Zoho: event" in page.locator("#verdict").inner_text()
            _no_sideways_scroll(page)
            shot = tmp_path / f"item-failed-{width}.png"
            page.screenshot(path=str(shot), full_page=True)
            shots.append(shot)
            assert errors == [], errors
            context.close()
        for shot in shots:
            assert shot.stat().st_size > 1000
            print(f"screenshot: {shot}")
    finally:
        stack.stop()
        fake.stop()
