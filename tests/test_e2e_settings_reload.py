"""Going live without a restart, on real processes: web, worker and beat start in dry-run; the Zoho credentials
appear in the home's .env (what `zoho connect` writes); the next delivery reaches the fake Zoho, and
`events replay --from-dry-run` sends what dry-run only recorded, once. A broken .env edit changes nothing."""

from __future__ import annotations

import pytest
import requests

from bridge.settings import write_env_values
from testkit.factories import issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import BridgeStack, wait_for

pytestmark = pytest.mark.e2e


def test_credentials_added_to_dotenv_take_effect_in_every_process(tmp_path):
    fake = FakeZoho().start()
    stack = BridgeStack(tmp_path, fake, dry_run=True, extra_env={"BRIDGE_HOME": str(tmp_path)})
    try:
        stack.start()
        assert stack.github("issues", issues_event("opened", number=1, title="Seen in dry-run")).status_code == 200
        assert stack.wait_idle(60).get("done") == 1 and fake.issues() == []

        write_env_values(tmp_path / ".env", {"ZOHO_DIALECT": "nonsense"})  # a broken edit: refused, nothing changes
        write_env_values(
            tmp_path / ".env",
            {
                "ZOHO_DIALECT": "projects",
                "ZOHO_API_BASE": fake.base_url,
                "ZOHO_ACCOUNTS_URL": fake.base_url,
                "ZOHO_CLIENT_ID": fake.client_id,
                "ZOHO_CLIENT_SECRET": fake.client_secret,
                "ZOHO_REFRESH_TOKEN": fake.refresh_token,
                "ZOHO_PORTAL_ID": fake.portal_id,
            },
        )
        wait_for(
            lambda: requests.get(stack.base_url + "/readyz", timeout=10).json()["dry_run"] is False,
            30,
            what="the web process to read the credentials from .env",
        )
        assert stack.github("issues", issues_event("opened", number=2, title="Live")).status_code == 200
        wait_for(lambda: [i["name"] for i in fake.issues()] == ["Live"], 60, what="the live delivery in Zoho")

        replay = stack.cli("events", "replay", "--from-dry-run", "--yes")
        assert replay.returncode == 0 and "1 event(s) of 1 item(s)" in replay.stdout, replay.stdout + replay.stderr
        wait_for(lambda: len(fake.issues()) == 2, 60, what="the dry-run item sent live")
        assert sorted(i["name"] for i in fake.issues()) == ["Live", "Seen in dry-run"]
        again = stack.cli("events", "replay", "--from-dry-run", "--yes")
        assert "nothing to replay" in again.stdout
        assert "settings reloaded" in stack.log_text()
        stack.assert_alive()
    finally:
        stack.stop()
        fake.stop()
