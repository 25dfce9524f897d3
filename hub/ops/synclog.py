"""The sync log's read side and support actions.

Read: find a subscriber, their state and timeline (the JSON API's shapes), search, and
the paginated lists of the staff pages. Every list is keyset-paginated on a primary key
and served by an index, so pages stay fast with millions of inbox rows.
Act: retry deliveries, replay an inbound event, send a customer's profile again.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, bindparam, func, or_, select
from sqlalchemy.orm import Session, selectinload

import connectors
from hub.models import (
    DEAD,
    FAILED,
    OPEN_STATUSES,
    QUEUED,
    RETRYING,
    Delivery,
    InboxEvent,
    Order,
    Payment,
    ProfileDue,
    RetryAsk,
    Subscriber,
    Subscription,
    Trigger,
)
from hub.models.link import LinkClick
from hub.sync.identity import SOURCE_ID_COLUMNS
from hub.values import normalize_email, row_id
from webhooks import SOURCE_NAMES

log = logging.getLogger(__name__)


def find(session: Session, key: str) -> Subscriber | None:
    """A subscriber by hub id, email or any platform customer id."""
    key = key.replace("\x00", "").strip()  # no stored text holds NUL (PostgreSQL refuses it)
    own_id = row_id(key)
    if own_id is not None:
        found = session.get(Subscriber, own_id)
        if found:
            return found
    email = normalize_email(key)
    if email:
        return session.scalar(select(Subscriber).where(Subscriber.email == email))
    return session.scalar(select(Subscriber).where(or_(*(column == key for column in SOURCE_ID_COLUMNS.values()))))


# Search ------------------------------------------------------------------------------

@dataclass
class SearchResult:
    """What a search box query found: people, and inbound events by their id."""

    query: str
    subscribers: list = field(default_factory=list)
    events: list = field(default_factory=list)

    @property
    def only(self) -> Subscriber | None:
        """The one subscriber found, when the query named exactly one person and nothing else."""
        if len(self.subscribers) == 1 and all(e.subscriber_id == self.subscribers[0].id for e in self.events):
            return self.subscribers[0]
        return None


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def search(session: Session, query: str, limit: int = 25) -> SearchResult:
    """Subscribers and events matching an email, name, platform id, order number or event id.

    Every lookup is an indexed equality or prefix range (email, the platform id columns,
    order number, (source, event id) with the source list spelled out so the composite
    index is used), except names, which scan the subscriber table only (never the inbox).
    """
    q = (query or "").replace("\x00", "").strip()  # no stored text holds NUL (PostgreSQL refuses it)
    result = SearchResult(q)
    if not q:
        return result
    found: dict[int, Subscriber] = {}

    def add(rows):
        for s in rows:
            if s is not None and s.id not in found and len(found) < limit:
                found[s.id] = s

    bare = q.lstrip("#")
    email = normalize_email(q)
    if email:
        add(session.scalars(select(Subscriber).where(Subscriber.email == email)))
    if " " not in q and len(q) >= 3:
        prefix = q.lower()
        add(session.scalars(select(Subscriber).where(Subscriber.email >= prefix,
                                                     Subscriber.email < prefix + "\U0010ffff")
                            .order_by(Subscriber.email).limit(limit)))
    add(session.scalars(select(Subscriber).where(or_(
        Subscriber.shopify_customer_id == bare, Subscriber.stripe_customer_id == q,
        Subscriber.chargebee_customer_id == q))))
    sources = list(SOURCE_NAMES)
    owner_ids = set()
    for model in (Subscription, Payment, Order):
        owner_ids.update(session.scalars(select(model.subscriber_id).where(
            model.source.in_(sources), model.source_id == bare)))
    owner_ids.update(session.scalars(select(Order.subscriber_id).where(
        Order.number.in_({bare, f"#{bare}"})).limit(limit)))
    owner_ids.add(row_id(bare))  # the hub's own subscriber id
    owner_ids.discard(None)
    if owner_ids:
        add(session.scalars(select(Subscriber).where(Subscriber.id.in_(sorted(owner_ids)[:limit]))))
    if any(ch.isalpha() for ch in q) and "@" not in q:
        words = q.lower().split()
        first, last = func.lower(Subscriber.first_name), func.lower(Subscriber.last_name)
        if len(words) >= 2:
            cond = and_(first.like(_like_prefix(words[0]), escape="\\"),
                        last.like(_like_prefix(" ".join(words[1:])), escape="\\"))
        else:
            cond = or_(first.like(_like_prefix(words[0]), escape="\\"),
                       last.like(_like_prefix(words[0]), escape="\\"))
        add(session.scalars(select(Subscriber).where(cond).order_by(Subscriber.id.desc()).limit(limit)))
    events = list(session.scalars(select(InboxEvent).where(
        InboxEvent.source.in_(sources), InboxEvent.event_id == q).limit(limit)))
    own_id = row_id(bare)  # the hub's own inbound event id
    if own_id is not None:
        row = session.get(InboxEvent, own_id)
        if row is not None and row not in events:
            events.append(row)
    result.subscribers = list(found.values())
    result.events = events
    return result


# Lists (keyset pagination) -------------------------------------------------------------

def open_rows():
    """InboxEvent.is_open() with its statuses written into the SQL as literals.

    SQLite uses the partial index ix_inbox_event_open only when it can prove the query's
    condition implies the index's, and it cannot with bound parameters (`status IN (?, ?)`):
    with them every "failed events" page would scan the whole inbox.
    """
    return InboxEvent.status.in_(bindparam(None, list(OPEN_STATUSES), expanding=True,
                                           literal_execute=True, unique=True))


# Rows of the inbox read at most per page when a filter cannot use an index: a page then
# shows what that stretch held and "Older" continues below it, so no page scans the table.
SCAN_WINDOW = 20_000


@dataclass
class Page:
    """One page of a list, newest first; `older` is the `before` cursor of the next page."""

    rows: list
    older: int | None = None
    searched_to: int | None = None  # set when the page stopped at the scan window, not the end


def first_id_at(session: Session, when: datetime) -> int:
    """The id where inbox rows received at or after `when` begin (binary search on the key).

    Ids grow with arrival time, so ~20 primary-key lookups replace an index on received_at
    (which every webhook would pay for).
    """
    lo = session.scalar(select(func.min(InboxEvent.id)))
    hi = session.scalar(select(func.max(InboxEvent.id)))
    if lo is None:
        return 0
    hi += 1
    while lo < hi:
        mid = (lo + hi) // 2
        at = session.scalar(select(InboxEvent.received_at).where(InboxEvent.id >= mid)
                            .order_by(InboxEvent.id).limit(1))
        if at is None or at >= when:
            hi = mid
        else:
            lo = mid + 1
    return lo


def recent_events(session: Session, source: str | None = None, topic: str | None = None,
                  status: str | None = None, since: datetime | None = None, until: datetime | None = None,
                  before: int | None = None, limit: int = 50) -> Page:
    """Inbound events newest first, filtered; keyset on the primary key."""
    conds = []
    if source:
        # `source || ''`: an expression, so the planner walks the primary key down from the
        # newest row instead of collecting every row of the source from (source, event_id).
        conds.append(InboxEvent.source + "" == source)
    if topic:
        conds.append(InboxEvent.topic == topic)
    if since:
        conds.append(InboxEvent.received_at >= since)
    if until:
        conds.append(InboxEvent.received_at < until)
    low = first_id_at(session, since) if since else None
    high = first_id_at(session, until) if until else None
    upper = min(x for x in (before, high) if x is not None) if (before or high) else None
    if upper is not None:
        conds.append(InboxEvent.id < upper)
    if low is not None:
        conds.append(InboxEvent.id >= low)
    window_floor = None
    if status in OPEN_STATUSES:
        # The partial index ix_inbox_event_open (status, id) serves this: repeat its condition.
        conds += [open_rows(), InboxEvent.status == status]
    else:
        if status:
            conds.append(InboxEvent.status == status)
        if source or topic or status:
            top = upper if upper is not None else (session.scalar(select(func.max(InboxEvent.id))) or 0) + 1
            window_floor = top - SCAN_WINDOW
            if low is None or window_floor > low:
                conds.append(InboxEvent.id >= window_floor)
            else:
                window_floor = None
    rows = list(session.scalars(select(InboxEvent).where(*conds).order_by(InboxEvent.id.desc())
                                .limit(limit + 1)))
    if len(rows) > limit:
        return Page(rows[:limit], older=rows[limit - 1].id)
    if window_floor is not None and window_floor > (session.scalar(select(func.min(InboxEvent.id))) or 0):
        return Page(rows, older=window_floor, searched_to=window_floor)
    return Page(rows)


def _connector_names() -> list[str]:

    return list(connectors.CONNECTORS)


FAILING = (RETRYING, DEAD)


def failing_deliveries(session: Session, status: str | None = None, connector: str | None = None,
                       before: int | None = None, limit: int = 50) -> Page:
    """Deliveries waiting to retry or dead-lettered, newest first.

    Naming every connector lets ix_delivery_queue (connector, status, …) find just the
    failing rows instead of walking the whole table.
    """
    statuses = [status] if status in FAILING else list(FAILING)
    names = [connector] if connector else _connector_names()
    ids = select(Delivery.id).where(Delivery.connector.in_(names), Delivery.status.in_(statuses))
    if before is not None:
        ids = ids.where(Delivery.id < before)
    # Ids first, from the index alone (it holds the row id); then only the page's rows.
    page_ids = list(session.scalars(ids.order_by(Delivery.id.desc()).limit(limit + 1)))
    rows = list(session.scalars(select(Delivery).where(Delivery.id.in_(page_ids)).order_by(Delivery.id.desc())))
    return Page(rows[:limit], older=rows[limit - 1].id if len(rows) > limit else None)


def delivery_counts(session: Session) -> dict[tuple[str, str], int]:
    """(connector, status) → deliveries, for the statuses still in the outbox (queued, retrying, dead)."""
    rows = session.execute(select(Delivery.connector, Delivery.status, func.count())
                           .where(Delivery.connector.in_(_connector_names()),
                                  Delivery.status.in_((QUEUED, RETRYING, DEAD)))
                           .group_by(Delivery.connector, Delivery.status))
    return {(c, s): n for c, s, n in rows}


def owed_profile_counts(session: Session) -> dict[str, int]:
    """connector → profiles that slower tool is owed (planned as its push has room)."""
    return dict(session.execute(select(ProfileDue.connector, func.count()).group_by(ProfileDue.connector)).all())


def unanswered_retry_counts(session: Session) -> dict[str, int]:
    """source → orchestrated retries asked of it that got no answer yet (asked again later)."""
    return dict(session.execute(select(Payment.source, func.count()).select_from(RetryAsk)
                                .join(Payment, Payment.id == RetryAsk.payment_id)
                                .where(RetryAsk.tries > 0).group_by(Payment.source)).all())


def owed_profiles_of(session: Session, subscriber_id: int) -> list[tuple[str, datetime]]:
    """(connector, since) of each slower tool owed this person's profile."""
    return [tuple(row) for row in session.execute(
        select(ProfileDue.connector, ProfileDue.marked_at).where(ProfileDue.subscriber_id == subscriber_id)
        .order_by(ProfileDue.connector))]


def failed_events(session: Session, before: int | None = None, limit: int = 50) -> Page:
    """Inbound events whose processing failed, newest first (partial index ix_inbox_event_open)."""
    query = select(InboxEvent).where(open_rows(), InboxEvent.status == FAILED)
    if before is not None:
        query = query.where(InboxEvent.id < before)
    rows = list(session.scalars(query.order_by(InboxEvent.id.desc()).limit(limit + 1)))
    return Page(rows[:limit], older=rows[limit - 1].id if len(rows) > limit else None)


def open_event_counts(session: Session) -> dict[str, int]:
    """status → inbox rows waiting or failed (partial index); "waiting": the failed ones whose
    platform did not answer, which the hub tries again by itself (hub.sync.inbox)."""
    by_status = InboxEvent.open_in_index_order(InboxEvent.status)
    counts = dict(session.execute(select(by_status.c.status, func.count()).group_by(by_status.c.status)).all())
    if counts.get(FAILED):
        waiting = InboxEvent.open_in_index_order(InboxEvent.id, where=(InboxEvent.is_waiting(),))
        counts["waiting"] = session.scalar(select(func.count()).select_from(waiting))
    return counts


def subscribers_by_id(session: Session, ids) -> dict[int, Subscriber]:
    ids = sorted({i for i in ids if i is not None})
    found = {}
    for start in range(0, len(ids), 500):
        found.update({s.id: s for s in session.scalars(select(Subscriber).where(
            Subscriber.id.in_(ids[start:start + 500])))})
    return found


# The subscriber page's story ----------------------------------------------------------------

@dataclass
class Story:
    """One timeline item: an inbound event with the triggers it fired and their deliveries,
    a trigger from a scheduled sweep, or a delivery of its own (profile, consent)."""

    kind: str  # "event" | "trigger" | "delivery" | "link" (a click on a customer link)
    at: datetime | None
    item: object
    triggers: list = field(default_factory=list)  # [(Trigger, [Delivery])]
    deliveries: list = field(default_factory=list)


# Order of a timeline's items that share an instant (newest first: events above what they caused).
_RANK = {"link": 3, "event": 2, "trigger": 1, "delivery": 0}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def story_cursor(item: Story) -> str:
    """The `before` of the page after `item`: its instant in microseconds, rank and id."""
    micros = (item.at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{_RANK[item.kind]}.{item.item.id}"


def event_cursor(row: InboxEvent) -> str:
    """The `before` of the timeline page that begins with this inbound event."""
    micros = (row.received_at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{_RANK['event']}.{row.id + 1}"


def _parse_cursor(before: str | None) -> tuple[datetime, int, int] | None:
    parts = (before or "").split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return _EPOCH + timedelta(microseconds=int(parts[0])), int(parts[1]), int(parts[2])


def _older_than(cursor, kind: str, at_column, id_column):
    """Rows of `kind` after the cursor in the timeline's order (instant, rank, id), newest first."""
    at, rank, row_id = cursor
    mine = _RANK[kind]
    if mine < rank:
        return at_column <= at
    if mine > rank:
        return at_column < at
    return or_(at_column < at, and_(at_column == at, id_column < row_id))


def story(session: Session, subscriber_id: int, before: str | None = None, limit: int = 50) -> Page:
    """One page of the subscriber's timeline, newest first, keyset-paged like the lists.

    The page's items are inbound events, triggers no event of theirs caused (sweeps), and
    deliveries no trigger caused (profile, consent); each event carries the triggers it
    fired and each trigger its deliveries, wherever their own times fall.
    """
    cursor = _parse_cursor(before)
    own_event = select(InboxEvent.id).where(InboxEvent.id == Trigger.inbox_event_id,
                                           InboxEvent.subscriber_id == subscriber_id).exists()
    streams = (
        ("event", InboxEvent, InboxEvent.received_at, [InboxEvent.subscriber_id == subscriber_id]),
        ("trigger", Trigger, Trigger.created_at, [Trigger.subscriber_id == subscriber_id,
                                                   or_(Trigger.inbox_event_id.is_(None), ~own_event)]),
        ("delivery", Delivery, Delivery.created_at, [Delivery.subscriber_id == subscriber_id,
                                                     Delivery.trigger_id.is_(None)]),
        ("link", LinkClick, LinkClick.clicked_at, [LinkClick.subscriber_id == subscriber_id]),
    )
    found = []
    for kind, model, at_column, conds in streams:
        if cursor is not None:
            conds = [*conds, _older_than(cursor, kind, at_column, model.id)]
        rows = session.scalars(select(model).where(*conds).order_by(at_column.desc(), model.id.desc())
                               .limit(limit + 1))
        found += [Story(kind, getattr(row, at_column.key), row) for row in rows]
    found.sort(key=lambda s: (s.at, _RANK[s.kind], s.item.id), reverse=True)
    items = found[:limit]
    events = {s.item.id: s for s in items if s.kind == "event"}
    fired = list(session.scalars(select(Trigger).where(
        Trigger.subscriber_id == subscriber_id, Trigger.inbox_event_id.in_(list(events))))) if events else []
    triggers = fired + [s.item for s in items if s.kind == "trigger"]
    by_trigger: dict[int, list] = {}
    if triggers:
        for d in session.scalars(select(Delivery).where(Delivery.trigger_id.in_([t.id for t in triggers]))
                                 .options(selectinload(Delivery.attempts_log)).order_by(Delivery.id)):
            by_trigger.setdefault(d.trigger_id, []).append(d)
    for t in sorted(fired, key=lambda t: t.id):
        events[t.inbox_event_id].triggers.append((t, by_trigger.get(t.id, [])))
    for s in items:
        if s.kind == "trigger":
            s.triggers.append((s.item, by_trigger.get(s.item.id, [])))
        elif s.kind == "delivery":
            s.deliveries.append(s.item)
            list(s.item.attempts_log)  # loaded while the session is open
    older = story_cursor(items[-1]) if len(found) > limit else None
    return Page(items, older=older)
