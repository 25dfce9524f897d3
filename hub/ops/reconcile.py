"""Reconciliation: poll each source for what changed since the last run and apply what the
webhooks missed (Shopify gives up after 4 hours and may delete a failing subscription;
Stripe retries for 3 days).

Each configured source's lister (its webhooks.SOURCES entry) is asked for objects changed since
its checkpoint ("reconcile:<source>", minus a few minutes of overlap for clocks and
in-flight writes). An object whose state the model already holds at that time or later
is skipped; the rest is stored in the inbox with origin "reconciliation" under the same
dedupe ids backfill uses (Stripe: the event's own id, shared with its webhook) and
drained through the normal path — live events, so rules fire as for a webhook. Rows that
changed something are what the timeline marks "recovered by reconciliation"; their count
is kept in the checkpoint "reconcile:recovered" for the dashboard.

A source whose client can also tell a subscription's upcoming renewal as it stands now
(`renewals(source_ids, now)`: Shopify, where a skipped or edited billing cycle may leave the
contract's updatedAt as it was, so the changes listing never shows it) is asked, about
RENEWAL_LEAD before each renewal reminder falls due, for the subscriptions whose reminder
does; what it tells is stored and drained as a listed change.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.models import LIVE_STATUSES, RECONCILIATION, InboxEvent, Order, Payment, Subscriber, Subscription
from hub.ops.backfill import listers, load_checkpoint, save_checkpoint, store
from hub.sync.inbox import drain_inbox
from hub.sync.readmodel import recovered
from hub.sync.rules import current_params
from hub.values import iso, utc
from webhooks.listing import Item

log = logging.getLogger(__name__)

OVERLAP = timedelta(minutes=5)
TOTAL = "reconcile:recovered"
# How long before a renewal reminder falls due its renewal is asked for again: a reminder is
# due at the start of its day in the merchant's zone, up to a day and more before the offset.
# It also bounds one pass's reading: reminders already due are past mending, so a first pass,
# or one after a long stop, reads at most this lead's worth of renewals (a contract and its
# cycles, two queries each), and none of those still to come is left out.
RENEWAL_LEAD = timedelta(days=2)


def held_at(session: Session, source: str, item: Item) -> datetime | None:
    """When the state the model holds for the item's object was current (None: not held)."""
    if not item.kind or not item.source_id:
        return None
    if item.kind == "customer":
        column = getattr(Subscriber, f"{source}_customer_id", None)
        if column is None:
            return None
        return utc(session.scalar(select(Subscriber.profile_updated_at).where(column == item.source_id)))
    model = {"subscription": Subscription, "payment": Payment, "order": Order}.get(item.kind)
    if model is None:
        return None
    if model is Subscription:
        held = session.execute(select(Subscription.source_updated_at, Subscription.known_by_ids_alone)
                               .where(Subscription.source == source, Subscription.source_id == item.source_id)).first()
        if held is None:
            return None
        updated_at, ids_alone = held
        # Known by its ids alone (a Shopify contract webhook applied without its contract): the
        # listed record, which names the plan, price and person, is news whatever its time.
        return None if ids_alone else utc(updated_at)
    return utc(session.scalar(select(model.source_updated_at)
                              .where(model.source == source, model.source_id == item.source_id)))


def is_news(session: Session, source: str, item: Item) -> bool:
    """False when the model already holds this object's state or a newer one."""
    held = held_at(session, source, item)
    return held is None or item.updated_at is None or utc(item.updated_at) > held


@dataclass
class SourceReport:
    source: str
    listed: int = 0
    known: int = 0  # the model already held this state or a newer one
    checked: int = 0  # upcoming renewals read again before their reminders (renewals_due)
    stored: int = 0
    recovered: int = 0
    since: str | None = None
    error: str | None = None


@dataclass
class Report:
    sources: list[SourceReport] = field(default_factory=list)

    @property
    def recovered(self) -> int:
        return sum(s.recovered for s in self.sources)


def checkpoint_name(source: str) -> str:
    return f"reconcile:{source}"


def run(hub, sources=None, now: datetime | None = None) -> Report:
    """One reconciliation pass over the configured sources (or the ones named)."""
    now = utc(now) or datetime.now(timezone.utc)
    report = Report()
    for name, lister in listers().items():
        if (sources and name not in sources) or lister.problem(hub.settings):
            continue
        one = SourceReport(source=name)
        report.sources.append(one)
        try:
            _reconcile_source(hub, lister, one, now)
        except Exception as exc:  # one source failing leaves the others reconciled
            one.error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("reconciliation of %s failed: %s", name, one.error)
    return report


def _reconcile_source(hub, lister, one: SourceReport, now: datetime) -> None:
    name = checkpoint_name(lister.source)
    with hub.storage.session() as session:
        saved = load_checkpoint(session, name) or {}
    lookback = timedelta(hours=hub.settings.HUB_RECONCILE_LOOKBACK_HOURS)
    since = utc(saved.get("since")) - OVERLAP if saved.get("since") else now - lookback
    one.since = iso(since)
    client = lister.client(hub.settings)
    event_ids = []
    for stream in lister.changes:
        cursor = None
        while True:
            page = client.page(stream, cursor, since)
            one.listed += len(page.items)
            with hub.storage.session() as session:
                fresh = [item for item in page.items if is_news(session, lister.source, item)]
                one.known += len(page.items) - len(fresh)
                one.stored += store(session, lister.source, fresh, RECONCILIATION)
            event_ids += [item.event_id for item in fresh]
            if page.next is None:
                break
            cursor = page.next
    renewals = getattr(client, "renewals", None)
    if renewals is not None:
        with hub.storage.session() as session:
            due = renewals_due(session, lister.source, since, now,
                               current_params(hub.settings).renewal.offsets_days)
        items = renewals(due, now)
        one.checked = len(items)
        with hub.storage.session() as session:
            one.stored += store(session, lister.source, items, RECONCILIATION)
        event_ids += [item.event_id for item in items]
    if one.stored:
        drain_inbox(hub.storage, hub.settings)
    with hub.storage.session() as session:
        one.recovered = _count_recovered(session, lister.source, event_ids)
        save_checkpoint(session, name, {"since": iso(now), "last_run": {
            "listed": one.listed, "known": one.known, "stored": one.stored, "recovered": one.recovered}})
        if one.recovered:
            total = load_checkpoint(session, TOTAL) or {}
            by_source = dict(total.get("by_source") or {})
            by_source[lister.source] = by_source.get(lister.source, 0) + one.recovered
            save_checkpoint(session, TOTAL, {"count": total.get("count", 0) + one.recovered,
                                             "by_source": by_source, "last_at": iso(now)})


def renewals_due(session: Session, source: str, since: datetime, now: datetime,
                 offsets: tuple[int, ...]) -> list[str]:
    """Ids of `source`'s live subscriptions with a renewal reminder (`offsets` days before the
    renewal) falling due RENEWAL_LEAD after the span (since, now]: a steady run of passes
    asks for each reminder's renewal once. After a long stop, every reminder not yet due
    within RENEWAL_LEAD, and none already due."""
    found: set[str] = set()
    reminders_from = max(since + RENEWAL_LEAD, now)
    for offset in sorted(set(offsets)):
        days = timedelta(days=offset)
        found.update(session.scalars(select(Subscription.source_id).where(
            Subscription.source == source, Subscription.status.in_(LIVE_STATUSES),
            Subscription.next_renewal_at > reminders_from + days,
            Subscription.next_renewal_at <= now + RENEWAL_LEAD + days)))
    return sorted(found)


def _count_recovered(session: Session, source: str, event_ids: list[str]) -> int:
    count = 0
    for start in range(0, len(event_ids), 500):
        rows = session.execute(select(InboxEvent.origin, InboxEvent.status, InboxEvent.outcome)
                               .where(InboxEvent.source == source,
                                      InboxEvent.event_id.in_(event_ids[start:start + 500])))
        count += sum(1 for origin, status, outcome in rows if recovered(origin, status, outcome))
    return count


def recovered_total(session: Session) -> dict:
    """{"count", "by_source", "last_at"} of every change reconciliation recovered."""
    return load_checkpoint(session, TOTAL) or {"count": 0, "by_source": {}, "last_at": None}
