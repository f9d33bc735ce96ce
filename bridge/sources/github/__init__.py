"""GitHub: webhook parsing (`webhook.py`), REST client (`api.py`), backfill reader, writer, declared calls."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from bridge.events import NormalizedEvent
from bridge.settings import Settings
from bridge.sources.github import webhook
from bridge.sources.spec import AttachmentRef, Source, SourceSpec, file_name_of, url_key

# The hosts GitHub serves images pasted into an issue from (GitHub Enterprise: also its own host).
IMAGE_HOSTS = frozenset(
    {"github.com", "user-images.githubusercontent.com", "private-user-images.githubusercontent.com"}
)
# `![alt](url "title")` and `<img src="url">` in an issue body.
_MD_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_IMAGE = re.compile(r"<img\b[^>]*\bsrc\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)


def _webhook(settings: Settings) -> Source | None:
    return webhook.GitHubSource(settings.github_webhook_secret) if settings.github_webhook_secret else None


def _attachments(settings: Settings, event: NormalizedEvent) -> list[AttachmentRef]:
    body = event.fields.get("body")
    if not isinstance(body, str):
        return []
    urls = list(dict.fromkeys(m.group(1) for rx in (_MD_IMAGE, _HTML_IMAGE) for m in rx.finditer(body)))
    return [AttachmentRef(f"image:{url_key(u)}", u, file_name_of(u, "image.png")) for u in urls]


def _attachment_hosts(settings: Settings, html_url: str | None) -> tuple[set[str], set[str]]:
    hosts = set(IMAGE_HOSTS)
    own = urlsplit(str(html_url or "")).hostname
    if own:
        hosts.add(own.lower())
    return hosts, set()


def _rate(settings: Settings) -> tuple[float | None, str]:
    from bridge.sources.github.calls import LIMITS

    gh = next((lim for lim in LIMITS if lim.key == "github.content.minute"), None)
    if gh is None:
        return None, ""
    return gh.count * 60.0 / gh.window, f"writes: {gh.count} a minute; reads: the hourly limit GitHub's answers name"


SPEC = SourceSpec(
    name=webhook.NAME,
    fields=webhook.FIELDS,
    project_field="repository",
    label_field="labels",
    webhook=_webhook,
    reverse_actions={"close": ("completed", "not_planned"), "reopen": bool, "add_label": str, "remove_label": str},
    writer="bridge.sources.github.writer:GitHubWriter",
    writer_settings=(("GITHUB_TOKEN", "github_token"),),
    hidden_markers=True,
    attachments=_attachments,
    attachment_hosts=_attachment_hosts,
    read_item="bridge.sources.github.backfill:read_item",
    call_table="bridge.sources.github.calls:TABLE",
    backfill_command="bridge.sources.github.commands:BACKFILL",
    rate=_rate,
)
