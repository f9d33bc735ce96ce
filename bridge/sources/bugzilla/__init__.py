"""Bugzilla: webhook parsing, REST client, backfill reader, poller, writer, declared calls."""

from __future__ import annotations

from urllib.parse import urlsplit

from bridge.events import NormalizedEvent
from bridge.settings import Settings
from bridge.sources.bugzilla import webhook
from bridge.sources.spec import AttachmentRef, Source, SourceSpec


def _webhook(settings: Settings) -> Source | None:
    if not settings.bugzilla_webhook_secret:
        return None
    return webhook.BugzillaSource(
        settings.bugzilla_webhook_secret, header=settings.bugzilla_webhook_header, bugzilla_url=settings.bugzilla_url
    )


def _attachments(settings: Settings, event: NormalizedEvent) -> list[AttachmentRef]:
    """An `attachment.create` names one attachment; its content comes from `GET /rest/bug/attachment/{id}`."""
    raw = event.fields.get("attachment")
    if not isinstance(raw, dict) or raw.get("id") is None or not settings.bugzilla_url:
        return []
    size = raw.get("size")
    return [
        AttachmentRef(
            key=f"attachment:{raw['id']}",
            url=f"{settings.bugzilla_url.rstrip('/')}/rest/bug/attachment/{raw['id']}",
            file_name=str(raw.get("file_name") or f"attachment-{raw['id']}"),
            size=int(size) if isinstance(size, int | float) and not isinstance(size, bool) else None,
            via_api=True,
        )
    ]


def _attachment_hosts(settings: Settings, html_url: str | None) -> tuple[set[str], set[str]]:
    own = (urlsplit(settings.bugzilla_url).hostname or "").lower() if settings.bugzilla_url else ""
    return ({own}, {own}) if own else (set(), set())  # BUGZILLA_URL is the administrator's: configured


SPEC = SourceSpec(
    name=webhook.NAME,
    fields=webhook.FIELDS,
    project_field="product",
    label_field="keywords",
    webhook=_webhook,
    reverse_actions={"status": str, "resolution": str, "comment": str},
    writer="bridge.sources.bugzilla.writer:BugzillaWriter",
    writer_settings=(("BUGZILLA_URL", "bugzilla_url"), ("BUGZILLA_API_KEY", "bugzilla_api_key")),
    enricher="bridge.sources.bugzilla.api:enrich",
    attachments=_attachments,
    attachment_hosts=_attachment_hosts,
    fetch_attachment="bridge.sources.bugzilla.api:fetch_attachment",
    see_also=True,
    read_item="bridge.sources.bugzilla.backfill:read_item",
    call_table="bridge.sources.bugzilla.calls:TABLE",
    backfill_command="bridge.sources.bugzilla.commands:BACKFILL",
    poll="bridge.sources.bugzilla.poller:poll",
    poll_every=lambda settings: settings.bugzilla_poll_seconds if settings.bugzilla_poll_products else 0.0,
    rate=lambda settings: (None, "no documented rate: blocks only when it says so (Retry-After)"),
)
