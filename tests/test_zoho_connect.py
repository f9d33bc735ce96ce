"""`issue-bridge zoho connect` end to end against the fake accounts server (seed 001:126-493): the grant URL with
the dialect's scopes, the code exchanged once, the refresh token stored in the home's .env (mode 600, never
printed), the portals listed and ZOHO_PORTAL_ID set, `zoho verify` run; wrong data centre, secret or code named in
one line."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from click.testing import CliRunner
from dotenv import dotenv_values

from bridge.cli import main
from bridge.targets.zoho.grant import ATTACHMENT_SCOPES, SCOPES
from testkit.fakes.zoho import FakeZoho

PROJECT = "1752587000000097024"
CALLBACK = "http://127.0.0.1:8000/admin/zoho/callback"
# Keys the command writes: removed for the run and restored after, so nothing leaks into other tests.
CLEAN = dict.fromkeys(
    ("ZOHO_CLIENT_ID", "ZOHO_CLIENT_SECRET", "ZOHO_REFRESH_TOKEN", "ZOHO_ACCOUNTS_URL", "ZOHO_API_BASE")
)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "mappings").mkdir()
    return tmp_path


def _env(home: Path) -> dict[str, str | None]:
    return {
        **CLEAN,
        "ZOHO_PORTAL_ID": None,
        "ZOHO_DIALECT": None,
        "BRIDGE_HOME": str(home),
        "BRIDGE_DATA_DIR": str(home / "var"),
        "MAPPINGS_DIR": str(home / "mappings"),
        "BROKER_URL": "redis://127.0.0.1:1/0",
        "ZOHO_RATE_LIMIT_PER_MINUTE": "0",
    }


def _connect(home: Path, fake: FakeZoho, *args: str, secret: str | None = None) -> tuple[int, str]:
    argv = ["zoho", "connect", "--accounts-url", fake.base_url, "--api-base", fake.base_url]
    argv += ["--client-id", fake.client_id, "--client-secret", secret or fake.client_secret, *args]
    result = CliRunner().invoke(main, argv, env=_env(home))
    return result.exit_code, result.output


def test_self_client_code_connects_stores_the_token_picks_the_portal_and_verifies(home: Path) -> None:
    with FakeZoho() as fake:
        code = fake.self_client_code(list(SCOPES["projects"]))
        exit_code, output = _connect(home, fake, "--code", code, "--project", PROJECT)
        assert exit_code == 0, output
        assert f"scopes: {','.join(SCOPES['projects'])}" in output
        grant_url = next(line.strip() for line in output.splitlines() if "/oauth/v2/auth?" in line)
        query = parse_qs(urlsplit(grant_url).query)
        assert query["scope"] == [",".join(SCOPES["projects"])] and query["access_type"] == ["offline"]
        assert query["client_id"] == [fake.client_id] and query["response_type"] == ["code"]
        stored = dotenv_values(home / ".env")
        token = stored["ZOHO_REFRESH_TOKEN"]
        assert token and token != fake.refresh_token and token not in output  # a new one, never printed
        assert stored["ZOHO_CLIENT_ID"] == fake.client_id and stored["ZOHO_ACCOUNTS_URL"] == fake.base_url
        assert stored["ZOHO_PORTAL_ID"] == fake.portal_id
        assert stat.S_IMODE((home / ".env").stat().st_mode) == 0o600
        assert f"  {fake.portal_id}: fakeportal" in output and f"  {PROJECT}: Web" in output
        assert "Zoho self-test" in output and "the bridge can work with this portal" in output
        # The stored settings work for every later command, read from .env alone.
        projects = CliRunner().invoke(main, ["zoho", "projects"], env=_env(home))
        assert projects.exit_code == 0 and f"portal {fake.portal_id}" in projects.output, projects.output
        # The code was used once: running again with it is refused, in one line.
        exit_code, output = _connect(home, fake, "--code", code)
        assert exit_code == 1 and output.splitlines()[-1].startswith("Error: invalid_code: the grant code expired")


def test_the_printed_grant_url_works_in_a_browser_and_the_pasted_address_is_exchanged(home: Path) -> None:
    """The server-based flow, as a person does it: open the printed URL, accept, paste the address sent to."""
    with FakeZoho(redirect_uris=(CALLBACK,)) as fake:
        env = {k: v for k, v in {**os.environ, **_env(home)}.items() if v is not None}
        argv = [sys.executable, "-m", "bridge.cli", "zoho", "connect", "--accounts-url", fake.base_url]
        argv += ["--api-base", fake.base_url, "--client-id", fake.client_id, "--client-secret", fake.client_secret]
        proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None and proc.stdin is not None
        lines = []
        while not (line := proc.stdout.readline()).strip().startswith(fake.base_url + "/oauth/v2/auth?"):
            assert line, "".join(lines)
            lines.append(line)
        consent = requests.get(line.strip(), allow_redirects=False, timeout=10)  # the person accepts
        assert consent.status_code == 302 and consent.headers["Location"].startswith(CALLBACK + "?code=")
        out, _ = proc.communicate(consent.headers["Location"] + "\n", timeout=60)
        assert proc.returncode == 0, out
        assert dotenv_values(home / ".env")["ZOHO_PORTAL_ID"] == fake.portal_id
        assert "next: issue-bridge zoho verify --project <id>" in out


def test_wrong_secret_data_centre_or_redirect_is_one_line_naming_it(home: Path) -> None:
    with FakeZoho(redirect_uris=(CALLBACK,)) as fake, FakeZoho(client_id="1000.ANOTHERDC") as other_dc:
        code = fake.self_client_code(",".join(SCOPES["projects"]))
        exit_code, output = _connect(home, fake, "--code", code, secret="not-the-secret")
        assert exit_code == 1 and "Error: invalid_client from " in output and "secret is wrong" in output
        assert output.splitlines()[-1].startswith("Error: invalid_client") and "Traceback" not in output
        argv = ["zoho", "connect", "--dc", "eu", "--accounts-url", other_dc.base_url, "--client-id", fake.client_id]
        argv += ["--client-secret", fake.client_secret, "--code", code]
        result = CliRunner().invoke(main, argv, env=_env(home))
        assert result.exit_code == 1
        assert f"Error: invalid_client from {other_dc.base_url} (the .eu data centre)" in result.output
        fake.expire_grant_codes()  # minutes later: the code is no longer good
        exit_code, output = _connect(home, fake, "--code", code)
        assert exit_code == 1 and "invalid_code" in output
        consent = requests.get(
            f"{fake.base_url}/oauth/v2/auth",
            params={"scope": ",".join(SCOPES["projects"]), "client_id": fake.client_id, "response_type": "code"}
            | {"access_type": "offline", "redirect_uri": CALLBACK},
            allow_redirects=False,
            timeout=10,
        )
        pasted = consent.headers["Location"].replace(CALLBACK, "http://127.0.0.1:9999/elsewhere")
        exit_code, output = _connect(home, fake, "--code", pasted)
        assert exit_code == 1 and "invalid_redirect_uri" in output
    assert not (home / ".env").exists()  # nothing stored by a failed connect


def test_fake_accounts_follow_the_seed(home: Path) -> None:
    """The fake's grant rules (seed 001:264-281, 367-389): registered redirect URIs, valid scopes, a code once."""
    with FakeZoho(redirect_uris=(CALLBACK,)) as fake:
        base = {"scope": "ZohoProjects.portals.READ", "client_id": fake.client_id, "response_type": "code"}
        base |= {"redirect_uri": CALLBACK, "state": "s1"}
        auth = f"{fake.base_url}/oauth/v2/auth"

        def consent(**changes: str) -> requests.Response:
            return requests.get(auth, params=base | changes, allow_redirects=False, timeout=10)

        assert consent(redirect_uri="https://evil.example/cb").json() == {"error": "ERROR_invalid_redirect_uri"}
        assert consent(scope="ZohoProjects.everything").json() == {"error": "ERROR_invalid_scope"}
        assert consent(client_id="1000.NOPE").json() == {"error": "ERROR_invalid_client"}
        assert consent(response_type="token").json() == {"error": "ERROR_invalid_response_type"}
        fake.deny_next_consent()
        assert parse_qs(urlsplit(consent().headers["Location"]).query) == {"error": ["access_denied"], "state": ["s1"]}
        online = parse_qs(urlsplit(consent().headers["Location"]).query)
        assert online["state"] == ["s1"] and online["accounts-server"] == [fake.base_url]
        token = f"{fake.base_url}/oauth/v2/token"
        form = {"client_id": fake.client_id, "client_secret": fake.client_secret, "code": online["code"][0]}
        form |= {"grant_type": "authorization_code", "redirect_uri": CALLBACK}
        answer = requests.post(token, data=form, timeout=10).json()
        assert answer["access_token"] and "refresh_token" not in answer  # access_type online: no refresh token
        assert requests.post(token, data=form, timeout=10).json() == {"error": "invalid_code"}  # once only
        with pytest.raises(ValueError, match="Enter a valid scope"):
            fake.self_client_code("ZohoProjects.everything")


def test_a_mapping_that_copies_attachments_adds_the_upload_scopes_to_the_grant(home: Path) -> None:
    """`attachments: true` uploads through the portal's WorkDrive (seed 001:12298): the grant URL asks for those
    scopes too, and a code granted without them is connected with a warning naming them."""
    shipped = (Path(__file__).resolve().parents[1] / "mappings" / "examples" / "github.yaml").read_text()
    (home / "mappings" / "github.yaml").write_text(shipped.rstrip() + "\nattachments: true\n")
    wanted = SCOPES["projects"] + ATTACHMENT_SCOPES["projects"]
    with FakeZoho() as fake:
        code = fake.self_client_code(list(SCOPES["projects"]))
        exit_code, output = _connect(home, fake, "--code", code)
        assert exit_code == 0, output
        grant_url = next(line.strip() for line in output.splitlines() if "/oauth/v2/auth?" in line)
        assert parse_qs(urlsplit(grant_url).query)["scope"] == [",".join(wanted)]
        assert f"scopes: {','.join(wanted)}" in output
        assert "warning: the grant lacks ZohoProjects.portals.CREATE, WorkDrive.workspace.ALL" in output
