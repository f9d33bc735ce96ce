"""Zoho attachment calls (zoho-facts.md "Attachments"), beside the one client and through its session,
token, budget and call log; only the body differs (multipart instead of JSON).

- projects (v3): upload to the portal, `POST /api/v3/portal/{p}/attachments`, multipart `upload_file`
  (seed 001:12288-12361), answering `{"attachment": [{"attachment_id": …}]}`; then associate it with the
  issue, `POST …/projects/{j}/issues/{id}/attachments` with the form field `attachment_ids` = `[id]`
  (001:5195-5241); the issue's attachments are listed by `GET` on that path (001:5136).
- bugtracker: one call, `POST …/projects/{j}/bugs/{id}/attachments`, multipart `file` (seed 000:382-428).
"""

from __future__ import annotations

import time
from typing import Any

import requests

from bridge import store
from bridge.attachments import Fetched
from bridge.zoho.client import Response, ZohoClient, _retry_after
from bridge.zoho.errors import ZohoPermanentError, ZohoTransientError
from bridge.zoho.ratelimit import RateLimitTimeout


class ZohoAttachments:
    def __init__(self, client: ZohoClient) -> None:
        self.client = client

    @property
    def associates(self) -> bool:
        """Whether an upload still has to be associated with the issue (v3) or is on it already (BugTracker)."""
        return self.client.dialect != "bugtracker"

    def _issue_path(self, portal: str, project: str, issue_id: str) -> str:
        kind = "bugs" if self.client.dialect == "bugtracker" else "issues"
        return f"/api/v3/portal/{portal}/projects/{project}/{kind}/{issue_id}/attachments"

    def upload(self, portal: str, project: str, issue_id: str, file: Fetched) -> str:
        """Send the file; returns Zoho's attachment id."""
        part = (file.file_name, file.data, file.content_type)
        if self.client.dialect == "bugtracker":
            resp = self._multipart("POST", self._issue_path(portal, project, issue_id), files={"file": part})
        else:
            resp = self._multipart("POST", f"/api/v3/portal/{portal}/attachments", files={"upload_file": part})
        return _attachment_id(resp)

    def associate(self, portal: str, project: str, issue_id: str, attachment_id: str) -> None:
        ids = f"[{attachment_id}]" if attachment_id.isdigit() else f'["{attachment_id}"]'
        self._multipart("POST", self._issue_path(portal, project, issue_id), data={"attachment_ids": ids})

    def on_issue(self, portal: str, project: str, issue_id: str) -> list[dict[str, Any]]:
        """The issue's attachments as Zoho lists them (to look before repeating an upload or association)."""
        resp = self.client.call("GET", self._issue_path(portal, project, issue_id))
        data = resp.data if isinstance(resp.data, dict) else {}
        items = data.get("attachments") or data.get("attachment") or []
        return [a for a in items if isinstance(a, dict)]

    def _multipart(
        self,
        method: str,
        path: str,
        *,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        data: dict[str, str] | None = None,
    ) -> Response:
        """`ZohoClient.call` for a multipart body: same token refresh, budget, lease renewal, error types."""
        client = self.client
        described = {"files": {k: f"{v[0]} ({len(v[1])} bytes)" for k, v in (files or {}).items()}, **(data or {})}
        if client.dry_run:
            store.record_zoho_call(
                client.engine,
                event_id=client.event_id,
                method=method,
                path=path,
                request_json=described,
                status=None,
                response_text="dry-run: not sent",
                duration_ms=0.0,
                dry_run=True,
            )
            return Response(200, {"attachment": [{"attachment_id": "dry-run"}]}, "")
        for auth_attempt in range(2):
            token = client.tokens.get()
            try:
                client.limiter.acquire(timeout=min(30.0, client.settings.item_lease_seconds / 3))
            except RateLimitTimeout as exc:
                raise ZohoTransientError(str(exc), retry_after=exc.wait) from None
            if client.before_call is not None:
                client.before_call()
            started = time.monotonic()
            try:
                raw = client.session.request(
                    method,
                    client.settings.zoho_api_base + path,
                    files=files,
                    data=data if data is not None else None,
                    headers={"Authorization": f"Zoho-oauthtoken {token}"},
                    # A file takes longer than a JSON body; the read timeout stays the client's.
                    timeout=client.settings.zoho_timeout_seconds * 3,
                )
            except requests.RequestException as exc:
                client._record(method, path, described, None, type(exc).__name__, started)
                raise ZohoTransientError(f"{method} {path}: network error {type(exc).__name__}") from None
            client._record(method, path, described, raw.status_code, raw.text, started)
            try:
                body = raw.json() if raw.content else None
            except ValueError:
                body = None
            if 200 <= raw.status_code < 300:
                return Response(raw.status_code, body, raw.text)
            title, message, field = client._error(body, raw)
            if raw.status_code == 401 or title in ("INVALID_OAUTHTOKEN", "6004"):
                client.tokens.invalidate(token)
                if auth_attempt == 0:
                    continue
                raise ZohoPermanentError(f"{method} {path}: Zoho rejected a fresh token: {message}", status=401)
            if raw.status_code == 429 or title in ("6009", "TOO_MANY_REQUESTS"):
                retry_after = _retry_after(raw)
                client.limiter.penalize(time.time() + retry_after)
                raise ZohoTransientError(f"{method} {path}: Zoho rate limit (429)", status=429, retry_after=retry_after)
            if raw.status_code >= 500:
                raise ZohoTransientError(f"{method} {path}: Zoho answered {raw.status_code}: {message}")
            raise ZohoPermanentError(
                f"{method} {path}: Zoho answered {raw.status_code} {title}: {message}",
                status=raw.status_code,
                field=field,
            )
        raise AssertionError("unreachable")


def _attachment_id(resp: Response) -> str:
    data = resp.data if isinstance(resp.data, dict) else {}
    items = data.get("attachment") or data.get("attachments") or [data]
    first = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}
    found = first.get("attachment_id") or first.get("id")
    if not found:
        raise ZohoPermanentError(f"Zoho's upload answer names no attachment id: {resp.text[:200]}")
    return str(found)
