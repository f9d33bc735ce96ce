"""Live mapping reload on real processes: gunicorn + a celery worker + the strict FakeZoho over HTTP.

An edit under the running worker applies to the next event; a broken edit is refused, the last good
mapping keeps working, and /readyz names the problem with its file and line.
"""

from __future__ import annotations

import os

import pytest
import requests

from testkit.factories import issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import BridgeStack, wait_for

pytestmark = pytest.mark.e2e

WEB = "1752587000000097024"
ADMIN = "reload-admin-token-0123456789"


@pytest.fixture
def stack(tmp_path):
    fake = FakeZoho().start()
    bridge = BridgeStack(tmp_path, fake, extra_env={"ADMIN_TOKEN": ADMIN}).start(beat=False)
    yield bridge
    bridge.stop()
    fake.stop()


def _edit(stack: BridgeStack, old: str, new: str, bump: int) -> None:
    path = stack.mappings_dir / "github.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")
    stamp = path.stat().st_mtime + bump  # a distinct mtime even on coarse file systems
    os.utime(path, (stamp, stamp))


def _severity_of(stack: BridgeStack, number: int) -> str:
    fake = stack.fake
    assert fake is not None

    def issue():
        found = [i for i in fake.issues(WEB) if i.get("external_id") == f"github:acme/web#{number}"]
        return found[0] if found else None

    return wait_for(issue, 30, what=f"issue #{number} in Zoho")["severity"]["value"]


def test_edit_under_a_running_worker_applies_to_the_next_event(stack: BridgeStack):
    stack.github("issues", issues_event("opened", number=1, labels=("bug",), updated=0))
    assert _severity_of(stack, 1) == "Major"

    _edit(stack, "bug: Major}", "bug: Critical}", 10)
    stack.github("issues", issues_event("opened", number=2, labels=("bug",), updated=0))
    assert _severity_of(stack, 2) == "Critical"

    # A broken edit (a misspelt field) is refused: the last good mapping still applies.
    _edit(stack, "from: labels                 # a list", "from: lables                 # a list", 20)
    stack.github("issues", issues_event("opened", number=3, labels=("bug",), updated=0))
    assert _severity_of(stack, 3) == "Critical"

    # Still 200 (deliveries flow on the last good mapping), degraded with the reason; the details for operators.
    def readyz() -> requests.Response:
        return requests.get(stack.base_url + "/readyz", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)

    # The web process looks at the files at most every 2 s (an anonymous /readyz never reloads them per request).
    ready = wait_for(lambda: (r := readyz()).json()["status"] == "degraded" and r, 30, what="/readyz degraded")
    assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
    assert "mapping github.yaml: edit refused; the last good version is in force" in ready.json()["reasons"]
    problems = [p for p in ready.json()["problems"] if p.startswith("mapping ")]
    assert len(problems) == 1
    text = (stack.mappings_dir / "github.yaml").read_text().splitlines()
    line = next(n for n, t in enumerate(text, 1) if "from: lables" in t)
    assert f"github.yaml:{line}: fields.severity.from: unknown field 'lables' for source github" in problems[0]
    assert "did you mean 'labels'?" in problems[0]
    assert "mapping refused (the last good version stays in force)" in stack.log_text()
