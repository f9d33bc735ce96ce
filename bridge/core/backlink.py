"""Back-links: once an item's Zoho issue exists, post one note on the source item saying where it is tracked.

Exactly once per item: the sync service only *requests* it (a `reverse_items` row, written once whatever
is redelivered, retried or backfilled); the beat tick posts it. Before the POST the row says `posting`, so a
tick that finds `posting` (a worker died between the POST and the bookkeeping) first looks for the hidden
marker on the source item and only posts when it is not there. Failures back off like events do and stay
visible in the row (`backlink_error`, `backlink_attempts`) and the log.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine

from bridge import store
from bridge.mapping import MappingRegistry
from bridge.mapping.model import Mapping
from bridge.mapping.talkback import render
from bridge.settings import Settings
from bridge.sources.writers import missing_credential, writer_for
from bridge.store import Link
from bridge.store import reverse as state
from bridge.targets.zoho.client import ZohoClient

log = logging.getLogger("bridge.reverse")
CLAIM_SECONDS = 300.0  # a tick holds an item's back-link this long; a dead tick's item is looked at again after
SOURCE_PROJECT_FIELD = {"github": "repository", "bugzilla": "product", "bugherd": "project_id"}


def request_backlink(engine: Engine, mapping: Mapping, link: Link | None) -> None:
    """Called by the sync service after the item's Zoho issue exists (one line in `sync.py`)."""
    if link is None or not link.confirmed or (mapping.backlink is None and mapping.reverse is None):
        return
    state.ensure_item(engine, link.source, link.external_id, backlink=mapping.backlink is not None)


def mapping_for(registry: MappingRegistry, link: Link) -> Mapping | None:
    project = str((link.last_fields or {}).get(SOURCE_PROJECT_FIELD.get(link.source, ""), ""))
    for mapping in registry.for_source(link.source):
        if mapping.accepts(project):
            return mapping
    return None


def zoho_values(client: ZohoClient, mapping: Mapping, link: Link) -> dict[str, str]:
    """What a back-link template may name; `key` is the issue's prefix (EC1-I14), read from Zoho once."""
    assert link.zoho_issue_id is not None
    resp = client.call("GET", f"{client._issues_path(link.portal, link.project)}/{link.zoho_issue_id}")
    issue: dict[str, Any] = resp.data if isinstance(resp.data, dict) else {}
    if isinstance(issue.get("bugs"), list) and issue["bugs"]:  # BugTracker wraps the bug in a list
        issue = issue["bugs"][0]
    values = {
        "issue_id": link.zoho_issue_id,
        "portal": link.portal,
        "project": link.project,
        "external_id": link.external_id,
        "key": str(issue.get("prefix") or issue.get("key") or link.zoho_issue_id),
    }
    assert mapping.backlink is not None
    values["url"] = render(mapping.backlink.url, values)
    return values


def post_due_backlinks(
    settings: Settings,
    engine: Engine,
    registry: MappingRegistry,
    client: ZohoClient,
    *,
    limit: int = 20,
    busy: Callable[[], bool] | None = None,
) -> int:
    """Post up to `limit` due back-links; stops early when `busy()` says forward events came in meanwhile."""
    posted = 0
    for n, item in enumerate(state.due_backlinks(engine, time.time(), limit)):
        if busy is not None and n and n % 10 == 0 and busy():
            break  # forward sync first: each back-link costs a Zoho read
        if not state.claim_backlink(engine, item, CLAIM_SECONDS):
            continue  # another tick (another worker) has it
        link = store.get_link(engine, item.source, item.external_id)
        mapping = mapping_for(registry, link) if link else None
        if link is None or mapping is None or mapping.backlink is None:
            state.set_backlink(engine, item.source, item.external_id, backlink_state="none")
            continue
        writer = writer_for(item.source, settings, engine, via=mapping.backlink.via)
        if writer is None:
            reason = missing_credential(item.source, settings) or "no writer for source"
            state.set_backlink(engine, item.source, item.external_id, backlink_state="failed", backlink_error=reason)
            continue
        fields = link.last_fields or {}
        phase = item.backlink_state if item.backlink_state == "posting" else "pending"
        try:
            if item.backlink_state == "posting":  # an earlier tick may have posted it before dying
                found = writer.find_comment(link, fields, "backlink")
                if found:
                    state.set_backlink(
                        engine, item.source, item.external_id, backlink_state="posted", backlink_ref=found
                    )
                    continue
            values = zoho_values(client, mapping, link)
            state.set_backlink(engine, item.source, item.external_id, backlink_state="posting")
            phase = "posting"  # from here a failure may hide a posted comment: look before posting again
            # Bugzilla's `via: see_also` adds the URL alone to See Also; everything else posts the template.
            see_also = item.source == "bugzilla" and mapping.backlink.via == "see_also"
            text = values["url"] if see_also else render(mapping.backlink.template, values)
            ref = writer.post_comment(link, fields, text, "backlink")
        except Exception as exc:  # every failure is retried with back-off and recorded: never lost
            attempts = item.backlink_attempts + 1
            delay = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** (attempts - 1))
            give_up = attempts >= settings.max_attempts
            state.set_backlink(
                engine,
                item.source,
                item.external_id,
                backlink_state="failed" if give_up else phase,
                backlink_attempts=attempts,
                backlink_next_at=time.time() + delay * random.uniform(0.5, 1.0),  # noqa: S311 - jitter
                backlink_error=f"{type(exc).__name__}: {exc}"[:500],
            )
            log.warning("back-link failed (attempt %s): %s", attempts, exc, extra={"item": link.item_key})
            continue
        state.set_backlink(
            engine, item.source, item.external_id, backlink_state="posted", backlink_ref=ref, backlink_error=None
        )
        log.info("back-link posted", extra={"item": link.item_key, "source": item.source})
        posted += 1
    return posted
