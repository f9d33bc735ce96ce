"""The journal of outside operations at the command line: what `status` shows of it, and `links backlink`."""

from __future__ import annotations

import click
from sqlalchemy.engine import Engine

from bridge.cli.common import _engine, _settings, _when
from bridge.core.journal import SOURCE_BACKLINK
from bridge.store import journal
from bridge.store.clock import db_now, engine_now

KIND_NAMES = {
    "zoho.create": "Zoho issue creates",
    "zoho.update": "Zoho issue updates",
    "zoho.recheck": "Zoho re-checks",
    "zoho.comment": "comments posted to Zoho",
    "zoho.attachment": "attachments copied to Zoho",
    "source.backlink": "back-links",
    "source.comment": "Zoho comments copied to the source",
    "source.state": "status changes made on the source",
}


def operation_lines(engine: Engine) -> list[str]:
    """Per kind: failing, in doubt and waiting operations, and the newest troubled ones with reason and next try."""
    with engine.connect() as conn:
        counts = journal.counts(conn)
        now = db_now(conn)
        troubled = journal.troubled(conn, now, limit=10)
    lines = []
    for kind, name in KIND_NAMES.items():
        failed, sent, planned = (counts.get((kind, s), 0) for s in ("failed", "sent", "planned"))
        confirmed = counts.get((kind, "confirmed"), 0)
        if failed or sent or planned:
            lines.append(f"{name}: {failed} failed, {sent} in doubt, {planned} waiting, {confirmed} done")
    for op in troubled:
        state = {"sent": "in doubt", "planned": "retrying"}.get(op.state, op.state)
        nxt = f"; next try {_when(op.next_at)}" if op.next_at else ""
        lines.append(f"  {op.source:<8} {op.item_key:<28} {op.kind}{' ' + op.ref if op.ref else ''}: {state}{nxt}")
        if op.last_error:
            lines.append(f"      {op.last_error[:300]}")
    return lines or ["none failing, in doubt or waiting"]


@click.command("backlink")
@click.option("--all", "every", is_flag=True, required=True, help="every linked item whose mapping has `backlink:`")
@click.option("--source", default=None, help="only this source")
@click.option("--spread", default=1.0, show_default=True, help="seconds between two items' back-links")
def links_backlink(every: bool, source: str | None, spread: float) -> None:
    """Offer back-links to items linked before `backlink:` was turned on (once each, paced by the budgets)."""
    from bridge.mapping import MappingRegistry
    from bridge.sources import KNOWN_FIELDS
    from bridge.store import operator

    settings = _settings()
    engine = _engine(settings)
    registry = MappingRegistry(settings.mappings_dir, known_fields=KNOWN_FIELDS)
    with_backlink = {m.source for m in registry.all() if m.backlink is not None}
    if source is not None:
        with_backlink &= {source}
    if not with_backlink:
        raise click.ClickException("no mapping has `backlink:`" + (f" for {source}" if source else ""))
    items = [
        (link.source, link.item_key)
        for link in operator.linked_items(engine, sorted(with_backlink))
        if _mapping_backlinks(registry, link)
    ]
    with engine.begin() as conn:
        planned = journal.plan_missing(conn, db_now(conn), items, SOURCE_BACKLINK, spread=spread)
    eta = engine_now(engine) + planned * spread
    click.echo(f"{planned} back-link(s) planned ({len(items) - planned} item(s) had one already)")
    if planned:
        click.echo(f"posted by the workers as the budgets allow, the last one due about {_when(eta)}")


def _mapping_backlinks(registry: object, link: object) -> bool:
    from bridge.core.sidework import mapping_of

    mapping = mapping_of(registry, link)  # type: ignore[arg-type]
    return mapping is not None and mapping.backlink is not None
