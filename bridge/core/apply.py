"""Carrying a plan out against Zoho: the item's state (create, update, delete) and its comments.

Every write is an operation of the journal (`bridge/core/journal.py`), marked sent in the fenced step right
before its request leaves. Exactly one Zoho issue per item, at one Zoho call for an ordinary create. Only a
create *in doubt* (its operation was sent and never confirmed: a timeout, a lost answer, a killed or paused
worker) looks the item up first, by its marker, back to the operation's first send, and after creating checks
for a copy the bridge itself made (and again later, in the re-check, for a create Zoho applies after the
client gave up), deleting all but the linked issue. Comments are keyed by the source comment id; a comment in
doubt is looked up by its marker before it is posted again.

A linked item is always addressed through the portal and project stored on its link, so a routing change
in the mapping never sends an update to the issue id in another project.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from bridge import store
from bridge.core import rules, talkback
from bridge.core.claim import ClaimedItem
from bridge.core.journal import SENT, ZOHO_COMMENT, ZOHO_CREATE, ZOHO_RECHECK, ZOHO_UPDATE, Operation
from bridge.core.plan import StateStep, comment_ts
from bridge.core.recover import maybe_posted_before_restore
from bridge.events import NormalizedEvent
from bridge.mapping import RoutingError, external_id_of, render_comment, translate
from bridge.mapping.model import IssueDraft, Mapping
from bridge.mapping.ownership import BODY_KEYS, draft_values, overwritten, same, zoho_values
from bridge.outbound.errors import ConfigError, LimitWait, Permanent
from bridge.settings import Settings
from bridge.store import DONE, FAILED, CommentLink, Link, StoredEvent, outcomes
from bridge.store import links as link_rows
from bridge.targets.zoho.client import ZohoClient, is_missing
from bridge.targets.zoho.errors import ZohoPermanentError

log = logging.getLogger("bridge.sync")
T = TypeVar("T")
CLOCK_MARGIN = 600.0  # Zoho's clock and the database's may differ: look this much further back for duplicates


class PermanentEventError(Exception):
    """This event cannot succeed as it is (mapping, routing or Zoho 4xx): it goes to `failed`."""


def comment_marker(source: str, comment_id: str) -> str:
    return f"(issue-bridge {source} comment {comment_id})"


def body_hash(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


class Applier:
    def __init__(self, settings: Settings, client: ZohoClient) -> None:
        self.settings = settings
        self.client = client

    @property
    def dry_run(self) -> bool:
        return bool(self.client.dry_run)

    # -- bookkeeping, queued for the next fenced step -------------------------------------------------

    def finish(self, item: ClaimedItem, ev: StoredEvent, status: str, note: str | None = None) -> None:
        item.finished.add(ev.id)
        error = note if status == FAILED else None

        def write(conn: Any, now: float) -> None:
            if outcomes.finish(conn, ev.id, status, now, error=error) and note and status != FAILED:
                outcomes.add_notes(conn, ev.id, [note])

        item.later(write)
        log.info("event %s", status, extra={"event_id": ev.id, "item": ev.item_key, "source": ev.source})

    def note(self, item: ClaimedItem, ev: StoredEvent, *notes: str) -> None:
        if notes:
            item.later(lambda conn, _now: outcomes.add_notes(conn, ev.id, list(notes)))

    def keep_link(self, item: ClaimedItem, link: Link, **values: Any) -> None:
        """Remember link columns, in memory now and in the database at the next step. In dry-run the link
        is kept in the `dry-run` state, which real runs treat as no link at all."""
        item.link = dataclasses.replace(link, **{k: v for k, v in values.items() if hasattr(link, k)})
        if self.dry_run:
            snapshot = item.link
            item.later(lambda conn, now: link_rows.save_dry_run(conn, snapshot, now))
            return
        item.later(
            lambda conn, now: link_rows.update_link(conn, source=link.source, item_key=link.item_key, now=now, **values)
        )

    def recheck_later(self, item: ClaimedItem, delay: float | None = None) -> None:
        """Look at the item in Zoho again after `delay` seconds (default the re-check window), when a request
        of ours may still land late (a `zoho.recheck` operation). A later look already planned is kept."""
        if self.dry_run or item.link is None:
            return
        wait = self.settings.duplicate_recheck_seconds if delay is None else delay
        planned = item.journal.get(ZOHO_RECHECK)
        if planned is not None and planned.state == "planned" and (planned.next_at or 0.0) >= item.now + wait:
            return
        item.journal.plan(ZOHO_RECHECK, delay=wait)

    def send(
        self,
        item: ClaimedItem,
        kind: str,
        send: Callable[[], T],
        *,
        ref: str = "",
        payload: dict[str, Any] | None = None,
        result: Callable[[T], str | None] | None = None,
        confirm: bool = True,
    ) -> T:
        """One journaled write: marked sent right before its request leaves, confirmed with its answer. A
        request answered without effect (a throttle, a refusal) leaves nothing in doubt; a lost answer leaves
        the operation sent, which the next claim resolves. `confirm=False`: the answer is kept on the
        operation (`made`), still in doubt, and the caller confirms it with what depends on it (a create's
        link): a claim that fails in between leaves what it made to the next one, never a reason to make it
        again."""
        if self.dry_run:
            return send()
        item.journal.sending(kind, ref, payload=payload)
        try:
            answer = send()
        except (LimitWait, ConfigError):
            item.journal.answered(kind, ref, refused=None)
            raise
        except Permanent as exc:
            item.journal.answered(kind, ref, refused=exc.reason)
            raise
        item.journal.not_sent()  # a verb that turned out to send nothing (an empty update) leaves no doubt
        if (kind, ref) in item.journal.sent_now:
            made = result(answer) if result else None
            if confirm:
                item.journal.confirmed(kind, ref, result=made)
            elif made is not None:
                item.journal.made(kind, ref, made)
        return answer

    # -- state -----------------------------------------------------------------------------------------

    def draft(self, mapping: Mapping, event: NormalizedEvent, known: dict[str, Any] | None = None) -> IssueDraft:
        try:
            return translate(mapping, event, known)
        except RoutingError as exc:
            raise PermanentEventError(str(exc)) from None

    def _applied_tags(self, mapping: Mapping, ev: StoredEvent, link: Link) -> tuple[str, ...] | None:
        """The tags the bridge last applied, from the fields it last applied: the update adds and removes
        the difference in the documented form (seed 001:3843-3847). None when unknown: then it only adds."""
        if link.last_fields is None:
            return None
        try:
            before = translate(mapping, dataclasses.replace(ev.event, fields=dict(link.last_fields)), None)
        except Exception:  # an older mapping may not translate the old fields: only add, never guess removals
            return None
        return tuple(before.tags)

    def apply_state(self, item: ClaimedItem, step: StateStep, mapping: Mapping) -> None:
        self._apply_state(item, step, mapping)
        rules.plan_attachments(self, item, mapping)  # the batch's attachments, side work once the issue exists

    def _apply_state(self, item: ClaimedItem, step: StateStep, mapping: Mapping) -> None:
        ev = step.event
        self.client.event_id = ev.id
        if step.action == "skip":
            self.note(item, ev, step.note or "nothing to apply")
            return
        if step.action == "tombstone":
            self.note(item, ev, step.note or "deleted before it was synced")
            self._tombstone(item, ev, mapping)
            return
        draft = self.draft(mapping, ev.event, step.known)
        self.note(item, ev, *draft.notes)
        if step.action == "update":  # before v3's gate reads the item's state under the external id
            self._follow_identity(item, ev, draft)
        decided = rules.gate(self, item, ev, mapping, draft) if step.action != "delete" else None  # `when:`
        if decided is not None and decided.kind not in rules.PROCEED:
            return
        if step.action == "create":
            self._create(item, ev, draft, step, mapping)
            return
        link = item.link
        assert link is not None
        if step.action == "update":
            link = self._follow_route(item, ev, mapping, draft, link)
        draft = addressed(draft, link)
        if step.action == "delete" and step.in_doubt:
            self._delete_in_doubt(item, ev, mapping, draft, link)
            return
        assert link.zoho_issue_id is not None
        if step.action == "delete":
            self._delete(item, ev, mapping, draft, link.zoho_issue_id)
            self.keep_link(item, link, state="deleted", last_state_ts=ev.source_ts, applied_hash="deleted")
            return
        new_hash = body_hash(self.client.issue_body(draft, creating=False))
        own_echo = talkback.own_echo(item, link, step.fields, ev)
        if new_hash != link.applied_hash and own_echo:
            self.note(item, ev, "the source's echo of the bridge's own write: no Zoho call")
        elif new_hash != link.applied_hash:
            draft = talkback.guard_status(self, item, mapping, link, draft)
            rules.send_update(self, item, ev, mapping, draft, link, self._applied_tags(mapping, ev, link))
        else:
            self.note(item, ev, "no field changed: no Zoho call")
        self.keep_link(
            item, link, state="linked", last_state_ts=ev.source_ts, applied_hash=new_hash, last_fields=step.fields
        )
        if decided is not None:
            rules.updated(self, item, ev, mapping, decided)  # mapping v3: starts matching -> past comments

    def _tombstone(self, item: ClaimedItem, ev: StoredEvent, mapping: Mapping) -> None:
        """Deleted before anything reached Zoho: a link in the `deleted` state, without an issue, keeps the
        deletion terminal, so a reopen of the same (or an older) time delivered later creates nothing."""
        if self.dry_run:
            return
        try:
            draft = translate(mapping, ev.event, None)
            portal, project, external_id = draft.portal, draft.project, draft.external_id
        except RoutingError:  # an unroutable item has nowhere to go: the link only needs to exist
            portal, project, external_id = mapping.routing.portal, "", external_id_of(mapping, ev.event.fields)
        item.link = Link(ev.source, external_id, ev.item_key, portal, project, None, "deleted", ev.source_ts, None)
        item.later(
            lambda conn, now: link_rows.write_tombstone(
                conn,
                source=ev.source,
                external_id=external_id,
                item_key=ev.item_key,
                portal=portal,
                project=project,
                deleted_ts=ev.source_ts,
                now=now,
            )
        )

    def _follow_identity(self, item: ClaimedItem, ev: StoredEvent, draft: IssueDraft) -> None:
        """The item's external id renders differently now (a repository rename or transfer, a new `external_id`
        template, another mapping instance): the same Zoho issue takes the new one (the update sends it, in
        the custom field and the marker), and the bridge's rows of the item follow it, committed at once."""
        link = item.link
        if link is None or not link.confirmed or draft.external_id == link.external_id:
            return
        old, new = link.external_id, draft.external_id
        if not self.dry_run:
            holder = store.get_link(self.client.engine, link.source, new)
            if holder and holder.item_key != link.item_key:
                raise PermanentEventError(
                    f"external id {new!r} is already item {holder.item_key}'s: the mapping's external_id template "
                    "must tell items apart"
                )
            item.later(lambda conn, now: link_rows.rename_external_id(conn, link.source, old, new, now))
        self.keep_link(item, link, external_id=new)
        self.note(item, ev, f"external id {old} is now {new}: the same Zoho issue carries it")
        if not self.dry_run:
            item.step()

    def _follow_route(
        self, item: ClaimedItem, ev: StoredEvent, mapping: Mapping, draft: IssueDraft, link: Link
    ) -> Link:
        """The route names another project than the one the item's issue is in. `on_route_change: keep` (the
        default) leaves it there; `move` moves it with the documented call (seed 001:4007-4062), and the link
        follows, so updates and comments reach it in its new project."""
        target = draft.project
        if mapping.on_route_change != "move" or target == link.project or not link.zoho_issue_id:
            return link
        if draft.portal != link.portal:
            self.note(item, ev, f"the route names portal {draft.portal}: an issue moves only within its portal")
            return link
        issue_id = link.zoho_issue_id
        try:
            move = {"move_to": target}
            self.send(item, ZOHO_UPDATE, lambda: self.client.move_issue(link.portal, link.project, issue_id, target),
                      payload=move)  # fmt: skip
        except ZohoPermanentError as exc:
            # An earlier attempt's move whose answer was lost: the issue is in the new project already.
            if not is_missing(exc) or self.client.get_issue(link.portal, target, issue_id) is None:
                raise
        self.keep_link(item, link, project=target)
        self.note(item, ev, f"moved Zoho issue {issue_id} from project {link.project} to {target}")
        assert item.link is not None
        return item.link

    def _create(self, item: ClaimedItem, ev: StoredEvent, draft: IssueDraft, step: StateStep, mapping: Mapping) -> None:
        new_hash = body_hash(self.client.issue_body(draft, creating=False))
        link = item.link
        if link is None:
            link = Link(
                ev.source, draft.external_id, ev.item_key, draft.portal, draft.project, None, "creating", 0.0, None
            )
        else:
            draft = addressed(draft, link)
        doubt = item.journal.in_doubt(ZOHO_CREATE)
        intent = None
        if not self.dry_run:
            # The link's intent goes with the create's `sent` mark, in the step right before the request.

            def intent(conn: Any, now: float) -> None:
                link_rows.write_intent(
                    conn,
                    source=ev.source,
                    external_id=link.external_id,
                    item_key=ev.item_key,
                    portal=draft.portal,
                    project=draft.project,
                    now=now,
                )

            item.later(intent)
        try:
            if doubt is not None:
                issue_id = self._create_in_doubt(item, ev, draft, link, doubt)
            elif (existing := self._existing(item, ev, draft)) is not None:
                issue_id = existing
            else:
                issue_id = self.send(
                    item, ZOHO_CREATE, lambda: self.client.create_issue(draft), result=str, confirm=False
                )
        except link_rows.ExternalIdTaken as exc:
            if intent is not None:
                item.forget(intent)
            item.forget(item.journal.sent_write)
            item.journal.not_sent()
            raise PermanentEventError(
                f"external id {exc.external_id!r} is already item {exc.holder}'s: the mapping's external_id "
                "template must tell items apart (e.g. github:{issue_id})"
            ) from None
        self.keep_link(
            item,
            link,
            zoho_issue_id=issue_id,
            state="linked",
            portal=draft.portal,
            project=draft.project,
            last_state_ts=ev.source_ts,
            applied_hash=new_hash,
            last_fields=step.fields,
        )
        item.journal.confirmed(ZOHO_CREATE, result=issue_id)  # with the link, in the same step
        if doubt is not None:  # an earlier attempt's create may still land: look for a copy later
            self.recheck_later(item)
        rules.created(self, item, ev, mapping, draft)  # mapping v3: written values, past comments
        if not self.dry_run:
            talkback.request_backlink(item, mapping)  # talks back to the source: once the issue exists

    def _existing(self, item: ClaimedItem, ev: StoredEvent, draft: IssueDraft) -> str | None:
        """An existing issue to adopt instead of creating one (bridge/core/adopt.py): one `links recover` found
        carrying the item's marker, or (ADOPT_EXISTING) one naming the item; several naming it fail the event."""
        if self.dry_run or not (item.batch.found_any or self.settings.adopt_existing):
            return None  # nothing found to adopt: no lookup at all
        from bridge.core import adopt

        found = adopt.existing_issue(item.engine, self.client, draft, index=self.settings.adopt_existing)
        if found.verdict == adopt.AMBIGUOUS:
            raise PermanentEventError(str(adopt.Ambiguous(list(found.candidates), found.why)))
        if found.verdict != adopt.ADOPT or found.issue is None:
            return None
        issue_id = found.issue.issue_id
        try:
            self.send(item, ZOHO_UPDATE, lambda: self.client.update_issue(draft, issue_id))
        except ZohoPermanentError as exc:
            if not is_missing(exc):
                raise
            from bridge.store import found as found_rows  # gone from Zoho since it was found: created instead

            item.later(lambda conn, _now: found_rows.forget(conn, draft.portal, issue_id))
            return None
        item.journal.confirmed(ZOHO_CREATE, result=issue_id, payload={"adopted": found.why})
        self.note(item, ev, f"adopted existing Zoho issue {issue_id} (it {found.why}): not created again")
        return issue_id

    def _create_in_doubt(
        self, item: ClaimedItem, ev: StoredEvent, draft: IssueDraft, link: Link, doubt: Operation
    ) -> str:
        """An earlier attempt sent a create and never learned its answer. Every copy of that create carries the
        identity it was first sent with (the link's), even if the `external_id` template changed since: it is
        looked up under it, back to the operation's first send (however many issues were made since), adopted
        if found (and brought to this state), else created once more and the copies removed. An issue an
        earlier claim made and could not link yet (the operation's `result`) is taken as it is, unlooked."""
        if doubt.result:
            made = doubt.result
            self.send(item, ZOHO_UPDATE, lambda: self.client.update_issue(draft, made))
            self.note(item, ev, f"Zoho issue {made}, made by an earlier attempt that stopped before linking it")
            return made
        probe = as_created(draft, link)
        since = self._first_sent(doubt, item) - CLOCK_MARGIN
        found = self.client.find_issue(probe, created_after=since)
        if found is not None:
            issue_id = found
            item.journal.made(ZOHO_CREATE, "", issue_id)
            self.send(item, ZOHO_UPDATE, lambda: self.client.update_issue(draft, issue_id))
            self.note(item, ev, f"found Zoho issue {issue_id} made by an earlier attempt: adopted")
            return issue_id
        created = self.send(item, ZOHO_CREATE, lambda: self.client.create_issue(probe), result=str, confirm=False)
        issue_id = self.remove_duplicates(item, ev, probe, keep=None, since=since) or created
        if issue_id != created or probe is not draft:  # the earlier attempt's issue is kept, or renamed
            self.send(item, ZOHO_UPDATE, lambda: self.client.update_issue(draft, issue_id))
        return issue_id

    @staticmethod
    def _first_sent(op: Operation, item: ClaimedItem) -> float:
        first = (op.payload or {}).get("first_sent_at")
        return float(first) if isinstance(first, int | float) else (op.sent_at or item.now)

    def remove_duplicates(
        self,
        item: ClaimedItem,
        ev: StoredEvent | None,
        draft: IssueDraft,
        *,
        keep: str | None,
        since: float,
        keeper_renamed: bool = False,
    ) -> str | None:
        """Delete copies the bridge made itself (a create answered too late, or applied after the client gave
        up): issues carrying this item's marker that are newer than the one kept. `keep=None` keeps the
        oldest, the same choice every worker makes, so two workers never delete each other's keeper.
        `keeper_renamed`: the kept issue carries another external id now (the template changed), so every
        issue under this one is a copy. Returns the id kept (None if Zoho shows none)."""
        found = self.client.find_marked_issues(draft, created_after=since)
        if keeper_renamed and keep is not None and keep not in found:
            copies = found
        elif not found or (keep is not None and keep not in found):
            return keep  # Zoho does not show the one we keep (yet): deleting anything now would be a guess
        else:
            copies = found[found.index(keep if keep is not None else found[0]) + 1 :]
        kept = keep if keep is not None else found[0]
        if copies and item.journal.in_doubt(ZOHO_CREATE) is not None:
            item.journal.made(ZOHO_CREATE, "", kept)  # committed by the step before the first delete
        for other in copies:
            item.step()  # a destructive call is always fenced: a worker that lost the item deletes nothing
            try:
                self.client.delete_issue(draft.portal, draft.project, other)
            except ZohoPermanentError as exc:
                if not is_missing(exc):  # already gone: another worker removed the same copy
                    raise
            log.warning("deleted duplicate Zoho issue %s (kept %s)", other, kept, extra={"item": draft.external_id})
            if ev is not None:
                self.note(item, ev, f"deleted duplicate Zoho issue {other}, kept {kept}")
        return kept

    def recheck(self, item: ClaimedItem, mapping: Mapping, event: NormalizedEvent) -> None:
        """The re-check (`zoho.recheck`): the delayed look at the item in Zoho once a write of ours that was in
        doubt can no longer be in flight: late copies of a create or a comment, a state Zoho applied late.
        Resolves the operations it covered (confirmed)."""
        link = item.link
        assert link is not None
        create = item.journal.get(ZOHO_CREATE)
        deleted_in_doubt = link.zoho_issue_id is None and create is not None and create.state == SENT
        if create is not None and deleted_in_doubt and (link.state == "deleted" or event.action == "deleted"):
            draft = addressed(self.draft(mapping, event, link.last_fields), link)
            since = self._first_sent(create, item) - CLOCK_MARGIN
            issue_id = self.remove_duplicates(item, None, as_created(draft, link), keep=None, since=since)
            if issue_id is not None:
                item.journal.confirmed(ZOHO_CREATE, result=issue_id)
                self._delete(item, None, mapping, draft, issue_id, event)
                self.keep_link(item, link, zoho_issue_id=issue_id, state="deleted", applied_hash="deleted")
            else:  # the re-check comes once a late create can no longer land: it never reached Zoho
                never = "never reached Zoho (re-checked): nothing to delete"
                item.journal.failed(ZOHO_CREATE, "", never, attempt=False)
        if link.zoho_issue_id and link.state in ("linked", "deleted"):
            sent = create.sent_at if create is not None else None
            if create is not None and sent is not None and item.now - sent <= self._late_window():
                draft = addressed(self.draft(mapping, event, link.last_fields), link)
                since = self._first_sent(create, item) - CLOCK_MARGIN
                renamed = draft.external_id != link.external_id
                probe = as_created(draft, link)
                self.remove_duplicates(item, None, probe, keep=link.zoho_issue_id, since=since, keeper_renamed=renamed)
            self._remove_duplicate_comments(item, link)
            self._verify_state(item, mapping, event, link)
        update = item.journal.in_doubt(ZOHO_UPDATE)
        if update is not None and link.zoho_issue_id:
            item.journal.confirmed(ZOHO_UPDATE, payload={"resolved": "re-checked"})
        for op in item.journal.of_kind(ZOHO_COMMENT):
            if op.state == SENT and item.comment_links.get(op.ref) is not None:
                item.journal.confirmed(ZOHO_COMMENT, op.ref, result=item.comment_links[op.ref].zoho_comment_id)
        item.journal.confirmed(ZOHO_RECHECK)

    def _late_window(self) -> float:
        """How long after it was sent a create can still land, as far as the re-checks go (a re-check is due
        at most one window and one lease after a doubt). A create sent longer ago than that cannot have a copy
        landing now, so a re-check on a long-linked item (a timed-out update, a takeover) lists no issues.
        Measured from the latest create sent (the operation's `sent_at`), not its first."""
        return 2 * (self.settings.duplicate_recheck_seconds + self.settings.item_lease_seconds) + CLOCK_MARGIN

    def _verify_state(self, item: ClaimedItem, mapping: Mapping, event: NormalizedEvent, link: Link) -> None:
        """A write Zoho applied after a newer one (the client gave up on it, or a worker that had lost the item
        sent it) leaves an older state on the issue: read the issue once and send again only what differs.
        Compared are the fields the bridge owns and Zoho echoes as sent (title and options)."""
        if self.dry_run or link.zoho_issue_id is None:
            return
        if rules.filtered_out(item, link):  # `when:` keeps it out: what Zoho shows is on_unmatch's to decide
            return
        deleted = link.state == "deleted"
        if (deleted and mapping.on_delete != "close") or (not deleted and link.last_fields is None):
            return
        fields = dict(link.last_fields or {})
        draft = addressed(self.draft(mapping, dataclasses.replace(event, fields=fields), None), link)
        if deleted:
            draft = dataclasses.replace(draft, options={"status": mapping.closed_status})
        current = self.client.get_issue(link.portal, link.project, link.zoho_issue_id)
        if current is None:  # gone from Zoho: nothing to put right
            return
        shown = zoho_values(current, self.client.dialect)
        wrong = overwritten(mapping, draft, shown)
        if deleted:  # a deleted item's issue is only kept closed
            wrong = [name for name in wrong if name == "status"]
        if mapping.reverse is not None:  # Zoho's status is a person's to change there: `conflict:` decides
            wrong = [name for name in wrong if name != "status"]
        # A late write only ever carries a value the bridge once sent for this item; anything else is a
        # person's edit in Zoho, which stays.
        sent_before = self._values_sent_before(item, mapping, link, wrong) if wrong else {}
        wrong = [name for name in wrong if any(same(shown[name], v) for v in sent_before.get(name, ()))]
        if not wrong:
            return
        log.warning(
            "Zoho issue %s shows an older %s than the bridge last applied (a write that landed late): sent again",
            link.zoho_issue_id,
            ", ".join(wrong),
            extra={"item": link.item_key, "source": link.source},
        )
        issue_id = link.zoho_issue_id
        if deleted:
            self.send(item, ZOHO_UPDATE, lambda: self.client.close_issue(draft, issue_id, mapping.closed_status))
            return
        renames = BODY_KEYS.get(self.client.dialect, {})
        sent = {renames.get(name, name) for name in wrong}
        body = self.client.issue_body(draft, creating=False)
        self.send(item, ZOHO_UPDATE, lambda: self.client.update_issue(draft, issue_id, omit=set(body) - sent))

    def _values_sent_before(
        self, item: ClaimedItem, mapping: Mapping, link: Link, names: list[str]
    ) -> dict[str, list[Any]]:
        """Per field, the values the item's stored state events translate to: what a write of the bridge's
        own, landing late, could have carried (fields an event lacks keep the last applied ones)."""
        values: dict[str, list[Any]] = {name: [] for name in names}
        for older in store.state_events_of(item.engine, link.source, link.item_key):
            try:
                draft = translate(mapping, older, link.last_fields)
            except Exception:  # noqa: S112 - an event this mapping cannot translate was never sent as it is
                continue
            known = draft_values(draft)
            for name in names:
                if name in known:
                    values[name].append(known[name])
        return values

    def _remove_duplicate_comments(self, item: ClaimedItem, link: Link) -> None:
        assert link.zoho_issue_id is not None
        ours = {c.zoho_comment_id for c in item.comment_links.values() if c.zoho_comment_id}
        seen: dict[str, list[str]] = {}
        for comment_id, text in self.client.comments_of(link.portal, link.project, link.zoho_issue_id):
            start = text.rfind(f"(issue-bridge {link.source} comment ")
            if start >= 0:
                seen.setdefault(text[start:], []).append(comment_id)
        for ids in seen.values():
            keep = next((i for i in ids if i in ours), ids[0])
            for other in ids:
                if other != keep:
                    item.step()  # fenced, like every destructive call
                    self.client.delete_comment(link.portal, link.project, link.zoho_issue_id, other)
                    log.warning("deleted duplicate Zoho comment %s (kept %s)", other, keep)

    def _delete_in_doubt(
        self, item: ClaimedItem, ev: StoredEvent, mapping: Mapping, draft: IssueDraft, link: Link
    ) -> None:
        """Deleted while a create is in doubt: if the create reached Zoho, that issue gets the deletion;
        a create Zoho applies later is found by the re-check, which applies the deletion then."""
        create = item.journal.get(ZOHO_CREATE)
        assert create is not None
        since = self._first_sent(create, item) - CLOCK_MARGIN
        issue_id = self.remove_duplicates(item, ev, as_created(draft, link), keep=None, since=since)
        if issue_id is None:  # terminal now; the re-check closes a create that lands later
            self.note(item, ev, "deleted before it was synced: nothing in Zoho yet")
            self.keep_link(item, link, state="deleted", last_state_ts=ev.source_ts, applied_hash="deleted")
            self.recheck_later(item)
            return
        item.journal.confirmed(ZOHO_CREATE, result=issue_id)
        self._delete(item, ev, mapping, draft, issue_id)
        self.keep_link(
            item,
            link,
            zoho_issue_id=issue_id,
            state="deleted",
            last_state_ts=ev.source_ts,
            applied_hash="deleted",
        )
        self.recheck_later(item)

    def _delete(
        self,
        item: ClaimedItem,
        ev: StoredEvent | None,
        mapping: Mapping,
        draft: IssueDraft,
        issue_id: str,
        event: NormalizedEvent | None = None,
    ) -> None:
        event = event or (ev.event if ev is not None else None)
        assert event is not None
        if mapping.on_delete == "close":
            self.send(item, ZOHO_UPDATE, lambda: self.client.close_issue(draft, issue_id, mapping.closed_status),
                      payload={"status": mapping.closed_status})  # fmt: skip
        elif mapping.on_delete == "comment":
            text = f"The {event.item_kind} was deleted in {event.source}."
            self.send(item, ZOHO_UPDATE, lambda: self.client.add_comment(draft.portal, draft.project, issue_id, text),
                      payload={"comment": "deleted"})  # fmt: skip
        elif ev is not None:
            self.note(item, ev, "on_delete is ignore: nothing done")

    # -- comments --------------------------------------------------------------------------------------

    def apply_comment(self, item: ClaimedItem, ev: StoredEvent, mapping: Mapping) -> None:
        self.client.event_id = ev.id
        comment = ev.event.comment
        assert comment is not None
        if rules.comment_held(self, item, ev, mapping):  # mapping v3: the filter keeps the item out
            return
        link = item.link
        if self.dry_run and (link is None or not link.confirmed):
            draft = self.draft(mapping, ev.event)  # where it would go; nothing is stored in dry-run
            link = Link(
                ev.source, draft.external_id, ev.item_key, draft.portal, draft.project, "dry-run", "linked", 0.0, None
            )
        if link is not None and link.state == "deleted" and not link.zoho_issue_id:
            self.note(item, ev, "the item was deleted before it was synced: nothing to comment on")
            return
        if link is None or not link.confirmed or not link.zoho_issue_id:
            raise PermanentEventError("the item has no Zoho issue yet")
        portal, project, issue_id = link.portal, link.project, link.zoho_issue_id
        if talkback.own_comment(item, comment):
            self.note(item, ev, "a comment the bridge wrote on the source: not synced back")
            return
        needle = comment_marker(ev.source, comment.id)
        text = f"{render_comment(mapping, ev.event)}\n\n{needle}"
        ts = comment_ts(ev)
        existing = item.comment_links.get(comment.id)

        def keep(zoho_comment_id: str | None, state: str, digest: str | None) -> None:
            item.comment_links[comment.id] = CommentLink(zoho_comment_id, state, ts, digest)
            if self.dry_run:
                return
            item.later(
                lambda conn, now: link_rows.save_comment(
                    conn,
                    source=ev.source,
                    external_id=link.external_id,
                    comment_id=comment.id,
                    zoho_comment_id=zoho_comment_id,
                    state=state,
                    last_ts=ts,
                    body_hash=digest,
                    now=now,
                )
            )

        if ev.action == "comment_deleted":
            posted = existing.zoho_comment_id if existing and existing.state != "deleted" else None
            if posted is None and existing is None and item.journal.in_doubt(ZOHO_COMMENT, comment.id) is not None:
                posted = self.client.find_comment(portal, project, issue_id, needle)  # a post whose answer was lost
            if posted:
                zoho_id = posted
                self.send(item, ZOHO_COMMENT, lambda: self.client.delete_comment(portal, project, issue_id, zoho_id),
                          ref=comment.id, payload={"deleted": True}, result=lambda _: zoho_id)  # fmt: skip
                keep(posted, "deleted", None)
            else:
                # Remembered as deleted (a tombstone): its creation or an edit arriving after the deletion, out of
                # order, is then not posted. The deletion is the comment's newest state.
                if existing is None or existing.state != "deleted":
                    keep(None, "deleted", None)
                self.note(item, ev, "comment was never synced: nothing to delete; a late copy of it is not posted")
            return
        digest = body_hash(text)
        if existing and existing.state == "posted" and existing.zoho_comment_id:
            if existing.body_hash == digest or ts < existing.last_ts:
                self.note(item, ev, "comment already in Zoho")
                return
            zoho_id = existing.zoho_comment_id
            self.send(item, ZOHO_COMMENT, lambda: self.client.update_comment(portal, project, issue_id, zoho_id, text),
                      ref=comment.id, payload={"body_hash": digest}, result=lambda _: zoho_id)  # fmt: skip
            keep(existing.zoho_comment_id, "posted", digest)
            return
        if existing and existing.state == "deleted":
            self.note(item, ev, "comment was deleted in the source: not re-posted")
            return
        zoho_comment_id = None
        if item.journal.in_doubt(ZOHO_COMMENT, comment.id) is not None:  # an earlier post may have landed: look
            zoho_comment_id = self.client.find_comment(portal, project, issue_id, needle)
            if zoho_comment_id is None and item.link is not None:  # Zoho may still apply the earlier post
                self.recheck_later(item)
            else:
                item.journal.confirmed(ZOHO_COMMENT, comment.id, result=zoho_comment_id)
        elif existing is None and maybe_posted_before_restore(item.engine, ts):
            # posted by this bridge before its database was restored from a backup: find it, never post it twice
            zoho_comment_id = self.client.find_comment(portal, project, issue_id, needle)
            if zoho_comment_id is not None:
                item.journal.confirmed(ZOHO_COMMENT, comment.id, result=zoho_comment_id)
                self.note(item, ev, "comment found in Zoho by its marker (copied before a restore): not posted again")
        if zoho_comment_id is None:
            zoho_comment_id = self.send(
                item,
                ZOHO_COMMENT,
                lambda: self.client.add_comment(portal, project, issue_id, text),
                ref=comment.id,
                payload={"body_hash": digest},
                result=str,
            )
        keep(zoho_comment_id, "posted", digest)


def as_created(draft: IssueDraft, link: Link) -> IssueDraft:
    """The draft under the external id the item's first create was sent with (the link's): what a lookup
    for that create's issue or its copies must search for, even after an `external_id` template change."""
    if draft.external_id == link.external_id:
        return draft
    return dataclasses.replace(draft, external_id=link.external_id)


def addressed(draft: IssueDraft, link: Link) -> IssueDraft:
    """The draft sent where the item's issue is: the link's portal and project, whatever the route says now."""
    if (draft.portal, draft.project) == (link.portal, link.project):
        return draft
    return dataclasses.replace(draft, portal=link.portal, project=link.project)


__all__ = ["DONE", "Applier", "PermanentEventError", "addressed", "comment_marker"]
