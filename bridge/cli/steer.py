"""Steering at the command line: `pause` and `resume` (a source, a mapping file or one item), `links link` (adopt an
existing Zoho issue for an item) and `links recover` (relink the bridge's own issues after a restore)."""

from __future__ import annotations

import click

from bridge.cli.common import _engine, _settings, _wake


def register(main: click.Group, links: click.Group) -> None:
    main.add_command(pause_command)
    main.add_command(resume_command)
    links.add_command(links_link)
    from bridge.cli.recover import links_recover

    links.add_command(links_recover)


def _registry(settings):  # type: ignore[no-untyped-def]
    from bridge.mapping import MappingRegistry
    from bridge.sources import KNOWN_FIELDS

    return MappingRegistry(settings.mappings_dir, known_fields=KNOWN_FIELDS)


def wake(settings, items: list[tuple[str, str]]) -> None:  # type: ignore[no-untyped-def]
    """Enqueue the items now (best effort: the beat job's sweeper finds any it misses)."""
    if not items:
        return
    from bridge.process.broker import TASK_SYNC_ITEM, ensure_embedded_redis, make_celery

    try:
        if settings.embedded_broker:
            ensure_embedded_redis(settings)
        celery = make_celery(settings)
        for source, item_key in items:
            celery.send_task(TASK_SYNC_ITEM, args=(source, item_key))
    except Exception as exc:  # the events are stored and due: the sweeper wakes them
        click.echo(f"broker unreachable ({type(exc).__name__}); the beat job will pick the items up", err=True)


@click.command("pause")
@click.argument("what")
@click.option("--source", default=None, help="when WHAT is an item key known in several sources")
def pause_command(what: str, source: str | None) -> None:
    """Stop sending anything for a source, a mapping file or one item until `issue-bridge resume`.

    WHAT is a source (github, bugzilla, bugherd), a mapping file's name (github.yaml), or an item (key, external id,
    URL or Zoho issue). Deliveries are still accepted and stored; nothing is sent to Zoho or to the source for what is
    paused (an item being worked on finishes its current batch). The pause is kept in the database: it survives
    restarts and killed workers.
    """
    from bridge.core import steer

    settings = _settings()
    engine = _engine(settings)
    try:
        target = steer.target_of(engine, _registry(settings), what, source=source)
        fresh, waiting = steer.pause(engine, _registry(settings), target, "cli")
    except steer.SteerError as exc:
        raise click.ClickException(str(exc)) from None
    state = "paused" if fresh else "was paused already"
    click.echo(f"{target.describe()} {state}: {waiting} pending event(s) wait; `issue-bridge resume {what}` ends it")


@click.command("resume")
@click.argument("what")
@click.option("--source", default=None, help="when WHAT is an item key known in several sources")
def resume_command(what: str, source: str | None) -> None:
    """End a pause (`issue-bridge pause`): what waited is sent, oldest first, as the budgets allow."""
    from bridge.core import steer

    settings = _settings()
    engine = _engine(settings)
    try:
        target = steer.target_of(engine, _registry(settings), what, source=source)
        was, items = steer.resume(engine, target, "cli")
    except steer.SteerError as exc:
        raise click.ClickException(str(exc)) from None
    if not was and not items:
        click.echo(f"{target.describe()} was not paused: nothing to resume")
        return
    if not was:
        click.echo(f"{target.describe()} was not paused")
    wake(settings, items)
    click.echo(f"{target.describe()} resumed: {len(items)} item(s) woken; follow them with `issue-bridge status`")


@click.command("link")
@click.argument("item")
@click.argument("zoho_issue")
@click.option("--source", default=None, help="when ITEM is a key known in several sources")
@click.option("--project", default=None, help="the Zoho project the issue is in (default: the item's route)")
def links_link(item: str, zoho_issue: str, source: str | None, project: str | None) -> None:
    """Adopt an existing Zoho issue for an item (made by hand or by an earlier tool), instead of creating one.

    ITEM: item key, external id, URL or Zoho issue; ZOHO_ISSUE: the issue's id (or a key such as EC1-I14 the bridge
    has seen). The link is written as confirmed, and an update is queued that writes the item's state, its external
    id and its marker to the issue. Refused when the issue is another item's, the item has another issue, or a create
    of the item is still in doubt.
    """
    from bridge.core import steer
    from bridge.targets.zoho.client import ZohoClient
    from bridge.targets.zoho.errors import ZohoError

    settings = _settings()
    engine = _engine(settings)
    registry = _registry(settings)
    try:
        target = steer.target_of(engine, registry, item, source=source)
        if target.kind != "item":
            raise steer.SteerError(f"{item!r} names a {target.kind}, not an item")
        done = steer.link_item(
            engine, registry, ZohoClient(settings, engine), target.source, target.name, zoho_issue, "cli",
            project=project,
        )  # fmt: skip
    except steer.SteerError as exc:
        raise click.ClickException(str(exc)) from None
    except ZohoError as exc:
        raise click.ClickException(f"Zoho could not be asked: {exc.reason}") from None
    click.echo(
        f"{done.source} {done.item_key} ({done.external_id}) is linked to Zoho issue {done.issue_id} "
        f"(portal {done.portal}, project {done.project})"
    )
    if done.resync_event is not None:
        _wake(settings, engine, [done.resync_event])
        click.echo(f"queued event {done.resync_event}: the issue gets the item's state, external id and marker")
