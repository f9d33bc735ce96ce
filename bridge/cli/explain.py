"""`issue-bridge explain <item key | external id | source URL | Zoho issue id or key>`: an item's story."""

from __future__ import annotations

import json

import click

from bridge.cli.common import _engine, _settings, _when


@click.command("explain")
@click.argument("item")
@click.option("--source", default=None, help="when the key names items of several sources")
@click.option("--all", "every", is_flag=True, help="every stored event (default: the newest 300)")
@click.option("--json", "as_json", is_flag=True)
def explain(item: str, source: str | None, every: bool, as_json: bool) -> None:
    """Why an item is (not) in Zoho: the verdict, what happens next, then every delivery, decision, call and
    operation in time order.

    ITEM is an item key (acme/web#12, 1629704), an external id (github:acme/web#12), the item's URL in its
    source, or its Zoho issue id or key (EC1-I14).
    """
    from bridge.core import story
    from bridge.mapping import MappingRegistry
    from bridge.sources import KNOWN_FIELDS

    settings = _settings()
    engine = _engine(settings)
    found = [(s, k) for s, k in story.find_items(engine, item) if source in (None, s)]
    if not found:
        raise click.ClickException(
            f"nothing known as {item!r}" + (f" in {source}" if source else "")
            + ": give an item key (acme/web#12), an external id (github:acme/web#12), its URL, or a Zoho issue id"
        )  # fmt: skip
    registry = MappingRegistry(settings.mappings_dir, known_fields=KNOWN_FIELDS)
    told = [story.tell(engine, s, k, registry=registry, limit=None if every else 300) for s, k in found[:5]]
    if as_json:
        click.echo(json.dumps([_as_json(t) for t in told], indent=2, default=str))
        return
    if len(found) > 1:
        click.echo(f"{item!r} names {len(found)} items: " + ", ".join(f"{s} {k}" for s, k in found))
    for t in told:
        _show(t)


def _show(t: object) -> None:
    from bridge.core.story import Story

    assert isinstance(t, Story)
    title = f"{t.source} {t.item_key}" + (f" (mapping {t.mapping})" if t.mapping else "")
    if t.link is not None:
        title += f" — external id {t.link.external_id}"
    click.echo(click.style(title, bold=True))
    click.echo(t.verdict)
    click.echo("next:")
    for line in t.next:
        click.echo(f"  - {line}")
    if t.events_shown < t.events_total:
        click.echo(f"story (the newest {t.events_shown} of {t.events_total} events; --all for every one):")
    else:
        click.echo(f"story ({t.events_total} event(s)):")
    for e in t.entries:
        click.echo(f"  {_when(e.at)}  {e.kind:<9} {e.title}")
        for line in (e.detail or "").splitlines()[:6]:
            click.echo(f"  {'':<27}{'':<10}  {line[:300]}")
    if t.operations:
        click.echo("outside operations:")
        for op in t.operations:
            ref = f" {op.ref}" if op.ref else ""
            result = f" → {op.result}" if op.result else ""
            nxt = f", next {_when(op.next_at)}" if op.next_at else ""
            tries = f", {op.attempts} failed tries" if op.attempts else ""
            click.echo(f"  {op.kind}{ref}: {op.state}{result}{tries}{nxt}")
            if op.last_error:
                click.echo(f"      {op.last_error[:300]}")
    if t.comments:
        click.echo("comments (source comment → Zoho comment):")
        for cid, zid, state in t.comments:
            click.echo(f"  {cid} → {zid} ({state})")
    click.echo("")


def _as_json(t: object) -> dict[str, object]:
    from bridge.core.story import Story

    assert isinstance(t, Story)
    return {
        "source": t.source,
        "item": t.item_key,
        "mapping": t.mapping,
        "link": t.link.__dict__ if t.link is not None else None,
        "verdict": t.verdict,
        "verdict_kind": t.verdict_kind,
        "paused": t.held,
        "next": t.next,
        "events_total": t.events_total,
        "entries": [e.__dict__ for e in t.entries],
        "operations": [o.__dict__ for o in t.operations],
        "comments": [{"source": c, "zoho": z, "state": s} for c, z, s in t.comments],
    }
