"""Zoho attachment calls (zoho-facts.md "Attachments"), beside the one client and through its session,
token, budget and call log; only the body differs (multipart instead of JSON).

- projects (v3): upload to the portal, `POST /api/v3/portal/{p}/attachments`, multipart `upload_file`
  (seed 001:12288-12361), answering `{"attachment": [{"attachment_id": …}]}`; then associate it with the
  issue, `POST …/projects/{j}/issues/{id}/attachments` with the form field `attachment_ids` = `[id]`
  (001:5195-5241); the issue's attachments are listed by `GET` on that path (001:5136).
- bugtracker: one call, `POST …/projects/{j}/bugs/{id}/attachments`, multipart `file` (seed 000:382-428).
"""

from __future__ import annotations

from typing import Any

from bridge.core.attachments import Fetched
from bridge.targets.zoho.client import Response, ZohoClient
from bridge.targets.zoho.errors import ZohoPermanentError


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
        """A multipart call through the client's transport: same token refresh, budget, fence, error types."""
        resp = self.client.transport.call(method, path, files=files, form=data)
        if self.client.dry_run:
            return Response(200, {"attachment": [{"attachment_id": "dry-run"}]}, "")
        return resp


def _attachment_id(resp: Response) -> str:
    data = resp.data if isinstance(resp.data, dict) else {}
    items = data.get("attachment") or data.get("attachments") or [data]
    first = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}
    found = first.get("attachment_id") or first.get("id")
    if not found:
        raise ZohoPermanentError(f"Zoho's upload answer names no attachment id: {resp.text[:200]}")
    return str(found)
