"""Getting a refresh token without hand-made HTTP: the OAuth authorization-code grant (seed 001:126-493), shared
by `issue-bridge zoho connect` and the admin page's "Connect Zoho".

1. A grant code: from the Zoho API console's Self Client ("Generate Code" with the dialect's scopes, seed
   001:285-296), or from the browser flow `GET {accounts}/oauth/v2/auth?scope&client_id&response_type=code&
   access_type=offline&redirect_uri[&state]` (seed 001:214-262), which sends the browser back to the redirect
   URI with `code` (valid once, one or two minutes).
2. `POST {accounts}/oauth/v2/token` with `code`, `client_id`, `client_secret`, `grant_type=authorization_code`
   and the grant's `redirect_uri`, as a form body (seed 001:330-420): an access token and, for an offline
   grant, the refresh token the bridge keeps. Errors come back as 200 `{"error": …}` (seed 001:367-389).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlparse

import requests

if TYPE_CHECKING:
    from bridge.mapping.model import Mapping

# The documented data centres and their accounts servers (seed 001:344-349, 423-428).
DATA_CENTRES = {"com": "US", "eu": "EU", "in": "IN", "com.au": "AU", "com.cn": "CN"}
# What each dialect's calls need: the README's "Configure Zoho" table is the source (tests keep them equal).
SCOPES = {
    "projects": (
        "ZohoProjects.portals.READ",
        "ZohoProjects.projects.READ",
        "ZohoProjects.bugs.ALL",
        "ZohoProjects.users.READ",
        "ZohoProjects.custom_fields.READ",
    ),
    "bugtracker": (
        "ZohoBugTracker.portals.ALL",
        "ZohoBugTracker.projects.READ",
        "ZohoBugTracker.bugs.ALL",
        "ZohoBugTracker.users.READ",
    ),
}
# What copying attachments adds (mapping `attachments: true`): the portal upload through WorkDrive (seed
# 001:12298). BugTracker uploads onto the bug with the bug scope.
ATTACHMENT_SCOPES = {
    "projects": ("ZohoProjects.portals.CREATE", "WorkDrive.workspace.ALL", "WorkDrive.files.ALL"),
    "bugtracker": (),
}
TIMEOUT = 20.0


def scopes_for(dialect: str, *, attachments: bool = False) -> tuple[str, ...]:
    """The scopes the bridge asks for: the dialect's, plus the upload's when a mapping copies attachments."""
    return SCOPES[dialect] + (ATTACHMENT_SCOPES[dialect] if attachments else ())


class GrantError(Exception):
    """The grant could not be exchanged; the message is one line naming the cause (and what to do)."""


@dataclass(frozen=True)
class Grant:
    access_token: str
    refresh_token: str
    scope: str
    expires_in: float


def accounts_url(dc: str) -> str:
    return f"https://accounts.zoho.{dc}"


def api_base(dc: str, dialect: str) -> str:
    return f"https://{'projectsapi' if dialect == 'projects' else 'bugtracker'}.zoho.{dc}"


def data_centre_of(url: str) -> str | None:
    """ "com", "eu", … for a Zoho accounts or API URL; None for any other host (a fake, a proxy)."""
    host = (urlparse(url).hostname or "").lower()
    for dc in sorted(DATA_CENTRES, key=len, reverse=True):
        if host == f"zoho.{dc}" or host.endswith(f".zoho.{dc}"):
            return dc
    return None


def is_zoho_accounts(url: str) -> bool:
    """A documented accounts server (https://accounts.zoho.<dc>): the only ones a callback may name."""
    parsed = urlparse(url)
    return parsed.scheme == "https" and any(parsed.netloc == f"accounts.zoho.{dc}" for dc in DATA_CENTRES)


def grant_url(
    accounts: str,
    client_id: str,
    dialect: str,
    redirect_uri: str,
    state: str | None = None,
    *,
    attachments: bool = False,
) -> str:
    """The browser flow's authorization URL for the dialect's scopes, asking for a refresh token (offline)."""
    params = {
        "scope": ",".join(scopes_for(dialect, attachments=attachments)),
        "client_id": client_id,
        "response_type": "code",
        "access_type": "offline",
        "redirect_uri": redirect_uri,
    }
    if state is not None:
        params["state"] = state
    return f"{accounts.rstrip('/')}/oauth/v2/auth?{urlencode(params)}"


def _where(accounts: str, dc: str | None = None) -> str:
    dc = dc or data_centre_of(accounts)
    return f"{accounts} (the .{dc} data centre)" if dc else accounts


def exchange_code(
    accounts: str,
    client_id: str,
    client_secret: str,
    code: str,
    *,
    redirect_uri: str | None = None,
    data_centre: str | None = None,
    session: requests.Session | None = None,
) -> Grant:
    """Trade a grant code for tokens. Raises GrantError with one line naming the cause."""
    form = {
        "code": code.strip(),
        "client_id": client_id.strip(),
        "client_secret": client_secret.strip(),
        "grant_type": "authorization_code",
    }
    if redirect_uri:
        form["redirect_uri"] = redirect_uri
    url = f"{accounts.rstrip('/')}/oauth/v2/token"
    try:
        # Form body, as the seed asks "for security reasons": secrets in a query string end up in access logs.
        resp = (session or requests).post(url, data=form, timeout=TIMEOUT)
    except requests.RequestException as exc:
        reason = type(exc).__name__
        raise GrantError(f"Zoho accounts at {accounts} unreachable ({reason}): check the data centre") from None
    try:
        data = resp.json()
    except ValueError:
        data = None
    where = _where(accounts, data_centre)
    if not isinstance(data, dict):
        raise GrantError(f"{where} answered HTTP {resp.status_code} without a JSON object: is it Zoho's?")
    error = str(data.get("error") or "")
    if error == "invalid_client":
        raise GrantError(
            f"invalid_client from {where}: the client id or secret is wrong, or the client was created in "
            "another data centre (pick the one whose API console holds the client, or enable multi-DC for it)"
        )
    if error == "invalid_code":
        raise GrantError(
            "invalid_code: the grant code expired (it lives a few minutes), was already used (once only) or was made "
            "for another client: generate a new one and run this again at once"
        )
    if error == "invalid_redirect_uri":
        raise GrantError(
            f"invalid_redirect_uri: the redirect URI {redirect_uri!r} is not the one registered for this client "
            "in the Zoho API console"
        )
    if error or "access_token" not in data:
        raise GrantError(f"{where} refused the grant: {error or f'HTTP {resp.status_code}, no token'}")
    refresh = str(data.get("refresh_token") or "")
    if not refresh:
        raise GrantError(
            "Zoho issued no refresh token: the code must be generated with access_type=offline (a Self Client's "
            "codes always are); generate a new one"
        )
    expires = float(data.get("expires_in") or 3600)
    return Grant(str(data["access_token"]), refresh, str(data.get("scope") or ""), expires)


def missing_scopes(granted: str, dialect: str, *, attachments: bool = False) -> list[str]:
    """The scopes a grant lacks (Zoho lists the granted ones, space-separated; `.ALL` covers the operations
    of its scope name)."""
    have = {s.strip().casefold() for s in granted.replace(",", " ").split()}
    missing = []
    for scope in scopes_for(dialect, attachments=attachments):
        service_name = scope.rsplit(".", 1)[0].casefold()
        if scope.casefold() not in have and f"{service_name}.all" not in have:
            missing.append(scope)
    return missing


def copies_attachments(mappings: Iterable[Mapping]) -> bool:
    """Whether any loaded mapping copies attachments (`attachments: true`): its grant needs the upload scopes."""
    return any(m.v3.attachments for m in mappings)
