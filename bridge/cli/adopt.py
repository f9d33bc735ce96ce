"""`issue-bridge backfill … --adopt-only` and the pairs `backfill … --dry-run` prints with adoption on: for each item a
backfill reads, the Zoho issue it would adopt, or `create`, or `ambiguous` (several issues name it: never linked
without a person choosing, `issue-bridge links link`). See bridge/core/adopt.py."""

from __future__ import annotations

from collections import Counter
from typing import Any

import click


def run_adopt(settings: Any, engine: Any, reader: Any, *, link: bool) -> Counter[str]:
    """Read the source's items (nothing stored), match each against the route's project's index (read first), and
    print the pairs; with `link`, link each adoptable one (`links link`'s rules: an item or issue taken is left)."""
    from bridge.core import adopt, steer
    from bridge.mapping import MappingRegistry, RoutingError, translate
    from bridge.sources import KNOWN_FIELDS
    from bridge.store import get_link
    from bridge.targets.zoho.client import ZohoClient

    registry = MappingRegistry(settings.mappings_dir, known_fields=KNOWN_FIELDS)
    client = ZohoClient(settings, engine)
    indexed: set[tuple[str, str]] = set()
    counts: Counter[str] = Counter()
    for batch in reader.batches(None):
        for item in batch.items:
            states = [r.event for r in item.events if r.event.comment is None and r.event.has_state]
            if not states:
                continue
            event = states[-1]
            mapping = registry.for_event(event)
            if mapping is None:
                counts["no mapping"] += 1
                click.echo(f"no-mapping {event.source} {item.item_key}: no mapping takes it")
                continue
            try:
                draft = translate(mapping, event, None)
            except RoutingError as exc:
                counts["no route"] += 1
                click.echo(f"no-route  {event.source} {item.item_key}: {exc}")
                continue
            existing = get_link(engine, event.source, draft.external_id)
            if existing is not None and existing.confirmed:
                counts[adopt.LINKED] += 1
                click.echo(f"linked    {event.source} {item.item_key} → Zoho issue {existing.zoho_issue_id}")
                continue
            where = (draft.portal, draft.project)
            if where not in indexed:
                fields = {draft.external_id_field} if draft.external_id_field else set()
                read = adopt.refresh_index(engine, client, draft.portal, draft.project, fields, say=click.echo)
                click.echo(f"  project {draft.project}: {read} issue description(s) read")
                indexed.add(where)
            found = adopt.match(engine, draft)
            counts[found.verdict] += 1
            if found.verdict == adopt.ADOPT and found.issue is not None:
                issue = found.issue
                key = f" ({issue.issue_key})" if issue.issue_key else ""
                line = f"adopt     {event.source} {item.item_key} → Zoho issue {issue.issue_id}{key}: it {found.why}"
                if link:
                    done = steer.adopt_link(engine, event.source, item.item_key, draft.external_id, draft.portal,
                                            draft.project, issue.issue_id, "cli", found.why)  # fmt: skip
                    line += "; linked" if done else "; not linked (the item or the issue is taken)"
                    counts["linked now" if done else "not linked"] += 1
                click.echo(line)
            elif found.verdict == adopt.AMBIGUOUS:
                ids = ", ".join(f.issue_id for f in found.candidates)
                click.echo(f"ambiguous {event.source} {item.item_key}: Zoho issues {ids} {found.why}: not linked")
            else:
                click.echo(f"create    {event.source} {item.item_key}: no Zoho issue names it")
    summary = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
    click.echo(f"items: {summary or 'none'}")
    if link:
        click.echo("next: the backfill without --adopt-only brings each adopted issue to its item's state and marker")
    return counts
