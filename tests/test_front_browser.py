"""The front page and the failed-events page in a real headless chromium, at a phone's and a desktop's width.

Screenshots are written under the test's temporary folder (front-375.png, failed-1280.png, …).
"""

from __future__ import annotations

import pytest

from testkit.factories import issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import BridgeStack, wait_for
from tests.test_admin_browser import CHROMIUM_ARGS, _chromium

pytestmark = pytest.mark.e2e
TOKEN = "front-admin-token-0123456789abcdef"
WIDTHS = (375, 1280)


@pytest.fixture
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]' (see .ci/run)"
    )
    executable = _chromium()
    if executable is None:
        pytest.skip("chromium is not installed: apt-get install -y chromium (.ci/run does it)")
    with sync_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _no_sideways_scroll(page) -> None:  # type: ignore[no-untyped-def]
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"the page scrolls sideways: {width}px"


def test_front_page_and_failed_page_at_narrow_and_wide_widths(tmp_path, browser):
    fake = FakeZoho().start()
    stack = BridgeStack(tmp_path, fake, extra_env={"ADMIN_TOKEN": TOKEN})
    dry = BridgeStack(tmp_path / "dry", None, dry_run=True)
    try:
        stack.start()
        fake.fail_next(1, status=400)  # a refusal retrying cannot fix: the event fails for good
        long_title = "Checkout total is wrong when a coupon and a gift card are combined " * 3
        assert stack.github("issues", issues_event("opened", number=9, title=long_title)).status_code == 200
        wait_for(lambda: stack.counts().get("failed") == 1, 60, what="the event to fail")
        dry.start_web()

        for width in WIDTHS:
            context = browser.new_context(viewport={"width": width, "height": 900})
            page = context.new_page()
            page.set_default_timeout(15_000)

            # Live bridge: the endpoints with this host's URLs, the admin link, no secret on the page.
            page.goto(stack.base_url + "/")
            assert page.locator("#mode").get_attribute("data-mode") == "live"
            github = page.locator("#tracker-github").inner_text()
            assert f"{stack.base_url}/webhooks/github" in github and "enabled" in github
            assert "disabled" in page.locator("#tracker-bugzilla").inner_text()
            assert "<BUGHERD_WEBHOOK_TOKEN>/task_create" in page.locator("#tracker-bugherd").inner_text()
            assert "It's a Secret" not in page.content()
            assert page.locator("header a", has_text="Admin").get_attribute("href") == "/admin"
            _no_sideways_scroll(page)
            page.screenshot(path=str(tmp_path / f"front-{width}.png"), full_page=True)

            # A bridge without Zoho credentials says it is in dry-run, and that /admin needs ADMIN_TOKEN.
            page.goto(dry.base_url + "/")
            assert page.locator("#mode").get_attribute("data-mode") == "dry-run"
            assert "DRY-RUN" in page.locator("#mode").inner_text()
            assert "set ADMIN_TOKEN" in page.inner_text("main")
            _no_sideways_scroll(page)
            page.screenshot(path=str(tmp_path / f"front-dry-run-{width}.png"), full_page=True)

            # The failed page: the reason is readable (not a 50 px sliver) and the page itself does not overflow.
            page.goto(stack.base_url + "/admin/failed")
            page.fill("#token", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_url("**/admin/failed")
            reason = page.locator("#failed td.reason").first
            assert "400" in reason.inner_text()
            box = reason.bounding_box()
            assert box is not None and box["width"] >= 200, box
            _no_sideways_scroll(page)
            assert "UTC" in page.locator("#failed tbody tr").first.inner_text()  # times carry their zone
            page.screenshot(path=str(tmp_path / f"failed-{width}.png"), full_page=True)
            context.close()

        for name in ("front", "front-dry-run", "failed"):
            for width in WIDTHS:
                assert (tmp_path / f"{name}-{width}.png").stat().st_size > 1000
    finally:
        stack.stop()
        dry.stop()
        fake.stop()
