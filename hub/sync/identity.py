"""Who is this? Find or create the subscriber an event is about; merges are logged."""
from __future__ import annotations

import logging
from contextlib import contextmanager

from sqlalchemy import event, select, update
from sqlalchemy.orm import Session, object_session, selectinload
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.base import instance_state

from hub.db.bulk import add_numbered
from hub.db.dialect import one_of
from hub.db.unit import UnitOfWork, unit_of
from hub.models import (
    Delivery,
    InboxEvent,
    Merge,
    Order,
    Payment,
    Subscriber,
    Subscription,
    Trigger,
)
from hub.values import normalize_email

log = logging.getLogger(__name__)

SOURCE_ID_COLUMNS = {
    "shopify": Subscriber.shopify_customer_id,
    "stripe": Subscriber.stripe_customer_id,
    "chargebee": Subscriber.chargebee_customer_id,
    "recharge": Subscriber.recharge_customer_id,
}


_KEYS = ("email", *(c.key for c in SOURCE_ID_COLUMNS.values()))
CHUNK = 500  # values per IN list


class Known:
    """Subscribers of one drained batch by email and platform id, looked up with a few IN
    queries up front so resolving each event costs no query (and no autoflush).

    An entry holds a Subscriber, or None for "no such subscriber". A hit is checked against
    the object before it is trusted; any change of an indexed attribute drops its entries
    (the listeners below), so a stale entry only ever costs the query it saved.
    """

    def __init__(self):
        self.entries: dict[tuple[str, str], Subscriber | None] = {}
        # Created ahead for the batch; the first event to resolve one reports it new.
        self.fresh: set[Subscriber] = set()

    def get(self, session: Session, attr: str, value: str):
        """The held subscriber, None if known absent, or ... when the index cannot say."""
        found = self.entries.get((attr, value), ...)
        if found is None or found is ...:
            return found
        state = instance_state(found)  # inspect() without the registry lookup: twice per event
        if state.deleted or state.was_deleted or found not in session or getattr(found, attr) != value:
            return ...
        return found

    def put(self, attr: str, value, subscriber: Subscriber | None) -> None:
        if value:
            self.entries[(attr, value)] = subscriber

    def forget(self, attr: str, value) -> None:
        self.entries.pop((attr, value), None)


@contextmanager
def batch(unit: UnitOfWork, mentions):
    """Identities for a drained batch: inside the block find_subscriber/resolve answer from
    memory when given the index it yields (the unit holds it as `people`). `mentions`:
    (source, customer dict, creates) per event, in order; `creates` when the event's
    applier finds or creates its subscriber.

    People already held are loaded with one IN query per key kind (with the subscriptions
    and payments the rules read for every event). People nobody holds are created together,
    in one INSERT, when that cannot differ from creating them one at a time: every mention
    of their email and id in the batch names that same person and may create them (a
    deletion, an erasure or a whole-shop event in the batch turns this off for them or all).
    """
    session = unit.session
    known = Known()
    wanted: dict[str, set[str]] = {}
    people: dict[tuple[str, str], set] = {}  # key -> every (id key, email) it is seen with
    poisoned, eligible, precreate = set(), [], True
    for source, customer, creates in mentions:
        column = SOURCE_ID_COLUMNS.get(source)
        source_id = str(customer["source_id"]) if customer and customer.get("source_id") else None
        email = normalize_email((customer or {}).get("email"))
        id_key = (column.key, source_id) if column is not None and source_id else None
        keys = [k for k in (id_key, ("email", email) if email else None) if k]
        if not keys and not creates:
            precreate = False  # e.g. a whole-shop erasure: who it touches is not known here
        for attr, value in keys:
            wanted.setdefault(attr, set()).add(value)
            people.setdefault((attr, value), set()).add((id_key, email))
            if not creates:
                poisoned.add((attr, value))
        if creates and keys:
            eligible.append((keys, id_key, email))
    for attr, values in wanted.items():
        column = getattr(Subscriber, attr)
        values = sorted(values)
        for value in values:
            known.put(attr, value, None)
        for start in range(0, len(values), CHUNK):
            query = (select(Subscriber).where(one_of(session, column, values[start:start + CHUNK]))
                     .options(selectinload(Subscriber.subscriptions), selectinload(Subscriber.payments)))
            for subscriber in session.scalars(query):
                known.put(attr, getattr(subscriber, attr), subscriber)
    if precreate:
        _precreate(unit, known, people, poisoned, eligible)
    unit.people = known
    unit.expose()  # for _forget_on_change, which SQLAlchemy calls with the object alone
    try:
        yield known
    finally:
        unit.people = None


def _precreate(unit: UnitOfWork, known: "Known", people: dict, poisoned: set, eligible: list) -> None:
    rows, seen = [], set()
    for keys, id_key, email in eligible:
        if any(k in poisoned or len(people[k]) != 1 or known.entries.get(k) is not None for k in keys):
            continue
        if keys[0] in seen:
            continue
        seen.update(keys)
        rows.append({"email": email, **({id_key[0]: id_key[1]} if id_key else {})})
    if not rows:
        return
    # Numbered now and written once, with the values the batch leaves them with (one
    # executemany, hub.db.bulk.write_new), rather than inserted here and updated at the end.
    for subscriber in add_numbered(unit, Subscriber, rows):
        set_committed_value(subscriber, "subscriptions", [])
        set_committed_value(subscriber, "payments", [])
        for key in _KEYS:
            known.put(key, getattr(subscriber, key), subscriber)
        known.fresh.add(subscriber)
        unit.unprofiled.add(subscriber.id)


def _forget_on_change(attr: str):
    def listener(target, value, oldvalue, initiator):
        session = object_session(target)
        unit = unit_of(session) if session is not None else None
        known = unit.people if unit is not None else None
        if known is not None:
            known.forget(attr, value)
            known.forget(attr, oldvalue)
    return listener


for _attr in _KEYS:
    event.listen(getattr(Subscriber, _attr), "set", _forget_on_change(_attr))


def _lookup(session: Session, column, value: str, known: Known | None) -> Subscriber | None:
    if known is not None:
        found = known.get(session, column.key, value)
        if found is not ...:
            return found
    found = session.scalar(select(Subscriber).where(column == value))
    if known is not None:
        known.put(column.key, value, found)
    return found


def find_subscriber(session: Session, source: str, customer: dict,
                    people: Known | None = None) -> Subscriber | None:
    """The subscriber a customer dict points at, by source id then email; None if unknown.
    `people`: the drained batch's index (batch), asked before the database."""
    column = SOURCE_ID_COLUMNS[source]
    source_id = customer.get("source_id")
    if source_id:
        found = _lookup(session, column, str(source_id), people)
        if found:
            return found
    email = normalize_email(customer.get("email"))
    if email:
        return _lookup(session, Subscriber.email, email, people)
    return None


def resolve(session: Session, source: str, customer: dict, changes,
            people: Known | None = None) -> Subscriber | None:
    """Find or create the subscriber for `customer`, linking the source id to it; `changes`
    (hub.sync.apply.Changes) gets the notes and the email learned.

    A source id, once linked, wins over a changed email: the person keeps their
    record and their new email. When the new email already belongs to another
    record, the two are one person and are merged (the older record is kept). A person
    known by the id alone so far takes the email an event of theirs names.
    """
    notes = changes.notes
    column = SOURCE_ID_COLUMNS[source]
    attr = column.key
    source_id = str(customer["source_id"]) if customer.get("source_id") else None
    email = normalize_email(customer.get("email"))
    if not source_id and not email:
        return None

    by_id = _lookup(session, column, source_id, people) if source_id else None
    by_email = _lookup(session, Subscriber.email, email, people) if email else None

    if by_id and by_email and by_id.id != by_email.id:
        kept, gone = sorted((by_id, by_email), key=lambda s: s.id)
        merge(session, kept, gone, f"{source} customer {source_id} now uses {email}, "
                                   f"the email of subscriber {by_email.id}")
        notes.append(f"merged subscriber {gone.id} into {kept.id}")
        subscriber = kept
    elif by_id:
        subscriber = by_id
        _claim_fresh(subscriber, notes, people)
        if email and subscriber.email is None:
            # Known so far by the platform id alone (a webhook read by its ids): the email a later
            # event of the same customer names is theirs, and nobody else's (none was found by it).
            changes.set(subscriber, "email", email, "profile")
            if people is not None:
                people.put("email", email, subscriber)
            notes.append(f"email learned from this {source} event")
    elif by_email:
        subscriber = by_email
        _claim_fresh(subscriber, notes, people)
        if source_id and getattr(subscriber, attr) is None:
            setattr(subscriber, attr, source_id)
            notes.append(f"linked {source} customer {source_id}")
    else:
        subscriber = Subscriber(email=email)
        if source_id:
            setattr(subscriber, attr, source_id)
        # A new person has none yet: start the collections empty so that reading them
        # (the rules do, for every event) needs no query after the flush.
        subscriber.subscriptions, subscriber.payments = [], []
        session.add(subscriber)
        session.flush()
        if people is not None:
            people.put(attr, source_id, subscriber)
            people.put("email", email, subscriber)
        notes.append("new subscriber")
    return subscriber


def _claim_fresh(subscriber: Subscriber, notes: list[str], people: Known | None) -> None:
    if people is not None and subscriber in people.fresh:
        people.fresh.discard(subscriber)
        notes.append("new subscriber")


def merge(session: Session, kept: Subscriber, gone: Subscriber, reason: str) -> None:
    """Fold `gone` into `kept`: its records, source ids and counters move over."""
    for model in (Subscription, Payment, Order):
        session.execute(update(model).where(model.subscriber_id == gone.id).values(subscriber_id=kept.id))
    for model in (InboxEvent, Trigger, Delivery):
        session.execute(update(model).where(model.subscriber_id == gone.id).values(subscriber_id=kept.id))
    moved = {}
    for attr in ("shopify_customer_id", "stripe_customer_id", "chargebee_customer_id",
                 "recharge_customer_id", "phone", "first_name", "last_name"):
        if getattr(kept, attr) is None and getattr(gone, attr) is not None:
            moved[attr] = getattr(gone, attr)
    kept.orders_count += gone.orders_count
    kept.lifetime_spend += gone.lifetime_spend
    kept.loyalty_points += gone.loyalty_points
    kept.consent = {**gone.consent, **kept.consent}
    kept.cards = {**gone.cards, **kept.cards}
    for attr in ("first_order_at", "first_seen_at"):
        values = [v for v in (getattr(kept, attr), getattr(gone, attr)) if v]
        setattr(kept, attr, min(values) if values else None)
    email = gone.email
    session.delete(gone)
    session.flush()  # unique columns are free only once the other row is gone
    for attr, value in moved.items():
        setattr(kept, attr, value)
    if kept.email is None:
        kept.email = email
    session.add(Merge(kept_id=kept.id, merged_id=gone.id, reason=reason))
    # The bulk UPDATEs above moved rows under `kept`: its collections, if loaded, are stale.
    session.expire(kept, ["subscriptions", "payments", "orders"])
    log.info("merged subscriber %s into %s: %s", gone.id, kept.id, reason)
