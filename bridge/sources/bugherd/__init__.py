"""BugHerd: webhook parsing, API client, backfill reader, writer, declared calls."""

from __future__ import annotations

from bridge.events import NormalizedEvent
from bridge.settings import Settings
from bridge.sources.bugherd import webhook
from bridge.sources.spec import AttachmentRef, Source, SourceSpec, file_name_of, url_key

# BugHerd's documents (seed 002) do not name the host of `screenshot_url`: the administrator lists it in
# ATTACHMENT_HOSTS as it appears in their tasks, rather than the bridge trusting a guessed one.
SCREENSHOT_HOSTS: frozenset[str] = frozenset()


def _webhook(settings: Settings) -> Source | None:
    return webhook.BugHerdSource(settings.bugherd_webhook_token) if settings.bugherd_webhook_token else None


def _attachments(settings: Settings, event: NormalizedEvent) -> list[AttachmentRef]:
    url = event.fields.get("screenshot_url")
    if not isinstance(url, str) or not url.strip():
        return []
    url = url.strip()
    return [AttachmentRef(f"screenshot:{url_key(url)}", url, file_name_of(url, "screenshot.png"))]


def _rate(settings: Settings) -> tuple[float | None, str]:
    from bridge.sources.bugherd.calls import LIMITS

    bh = next((lim for lim in LIMITS if lim.count), None)
    if bh is None:
        return None, ""
    return bh.count * 60.0 / bh.window, f"{bh.count} per {bh.window:g} s, bursts of {bh.burst}"


SPEC = SourceSpec(
    name=webhook.NAME,
    fields=webhook.FIELDS,
    project_field="project_id",
    label_field="tag_names",
    webhook=_webhook,
    reverse_actions={"status": ("backlog", "todo", "doing", "done", "closed")},
    writer="bridge.sources.bugherd.writer:BugHerdWriter",
    writer_settings=(("BUGHERD_API_KEY", "bugherd_api_key"), ("BUGHERD_BRIDGE_EMAIL", "bugherd_bridge_email")),
    enricher="bridge.sources.bugherd.api:enrich",
    attachments=_attachments,
    attachment_hosts=lambda settings, html_url: (set(SCREENSHOT_HOSTS), set()),
    read_item="bridge.sources.bugherd.backfill:read_item",
    call_table="bridge.sources.bugherd.calls:TABLE",
    backfill_command="bridge.sources.bugherd.commands:BACKFILL",
    cli_group="bridge.sources.bugherd.commands:bugherd",
    rate=_rate,
)
