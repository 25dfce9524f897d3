"""Database side of the rules: indexed candidate queries and state snapshots.

Sweeps never load every subscriber: each time rule asks for the rows whose anchor date
falls in a one-day slice (an index range scan), then builds plain states for those only,
with Core queries so nothing piles up in the session's identity map.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import fields
from datetime import datetime
from typing import Iterable, Iterator

from sqlalchemy import Row, String, and_, case, cast, exists, func, null, or_, select
from sqlalchemy.orm import Session

from hub.db.dialect import card_expiring_in, one_of
from hub.models import Payment, Subscriber, Subscription, Trigger
from hub.sync.rules.state import (
    ENDED,
    OPEN_PAYMENT,
    PaymentState,
    SubscriberState,
    SubState,
    Window,
)

# Counted from a subscription's payments, not read from a column.
COUNTED = ("charges_made",)
SUB_FIELDS = [f.name for f in fields(SubState) if f.name not in COUNTED]
# What the time rules read of a subscription: fewer columns, far less row decoding at scale.
TIME_FIELDS = [k for k in SUB_FIELDS if k not in ("product_ids", "canceled_at", "started_at",
                                                   "usage_limit", "update_payment_url")]
# Subscriber-level rules never read a subscription's products (stock has its own query).
PERSON_SUB_FIELDS = [k for k in SUB_FIELDS if k != "product_ids"]
SUBSCRIBER_FIELDS = [f.name for f in fields(SubscriberState)
                     if f.name not in ("paid_payments", "subscriptions", "payments")]
PAYMENT_OWN = [f.name for f in fields(PaymentState) if hasattr(Payment, f.name)]
RUNNING = ("trialing", "active", "past_due")
CHUNK = 2000  # ids per IN list: few round trips, far below SQLite's bound-parameter cap


def sub_state(values, names=SUB_FIELDS, **counted) -> SubState:
    """A SubState from a row (columns named by `names`), a mapping or an ORM Subscription;
    `counted`: the COUNTED values, where known."""
    if isinstance(values, Row):
        data = dict(zip(names, values))
    else:
        get = values.get if hasattr(values, "get") else lambda k: getattr(values, k)
        data = {k: get(k) for k in names}
    data["product_ids"] = tuple(data.get("product_ids") or ())
    data["interval_count"] = data["interval_count"] or 1
    data["cancel_at_period_end"] = bool(data["cancel_at_period_end"])
    return SubState(**data, **counted)


# Core table columns, not ORM attributes: at sweep scale the ORM's per-row work dominates.
SUB, PAY, PERSON = Subscription.__table__, Payment.__table__, Subscriber.__table__


def _columns(names, table=SUB):
    return [table.c[k] for k in names]


def payment_state(values, sub: SubState | None) -> PaymentState:
    get = values.get if hasattr(values, "get") else lambda k: getattr(values, k)
    data = {k: get(k) for k in PAYMENT_OWN}
    data["hard_decline"] = bool(data["hard_decline"])
    data["attempt_count"] = data["attempt_count"] or 0
    if sub is not None:
        data.update(subscription_source_id=sub.source_id, subscription_status=sub.status, plan=sub.plan,
                    subscription_update_payment_url=sub.update_payment_url)
    return PaymentState(**data)


def subscriber_state(subscriber: Subscriber) -> SubscriberState:
    """The state of one ORM subscriber (event path; relations load lazily)."""
    made = Counter(x.subscription_id for x in subscriber.payments if x.status == "succeeded")
    subs = tuple(sub_state(x, charges_made=made[x.id]) for x in subscriber.subscriptions)
    by_id = {x.id: x for x in subs}
    payments = tuple(payment_state(x, by_id.get(x.subscription_id)) for x in subscriber.payments
                     if x.status in OPEN_PAYMENT)
    paid = sum(1 for x in subscriber.payments if x.status == "succeeded")
    # Loaded column values straight from the instance dict: the attribute descriptor costs
    # more than the read, once per field of every drained event. Unloaded ones load as usual.
    held = subscriber.__dict__
    return _subscriber({k: held[k] if k in held else getattr(subscriber, k) for k in SUBSCRIBER_FIELDS},
                       subs, payments, paid)


def _subscriber(data: dict, subs, payments, paid: int) -> SubscriberState:
    data = dict(data, cards=data.get("cards") or {}, usage=tuple(data.get("usage") or ()),
                orders_count=data.get("orders_count") or 0, lifetime_spend=data.get("lifetime_spend") or 0,
                loyalty_points=data.get("loyalty_points") or 0)
    return SubscriberState(**data, subscriptions=subs, payments=payments, paid_payments=paid)


def subscriber_states(session: Session, ids: Iterable[int], payments: bool = True) -> Iterator[SubscriberState]:
    """States of many subscribers (erased ones left out), a chunk of queries at a time;
    `payments=False` leaves payments out for rules that never read them."""
    ids = sorted(set(ids))
    s_cols = _columns(SUBSCRIBER_FIELDS, PERSON)
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i:i + CHUNK]
        pay_rows = session.execute(select(PAY.c.subscription_id, *_columns(PAYMENT_OWN, PAY))
                                   .where(one_of(session, PAY.c.subscriber_id, chunk))).all() if payments else ()
        # Paid charges per subscription, as subscriber_state counts them (None: not read).
        made = Counter(row.subscription_id for row in pay_rows if row.status == "succeeded")
        subs: dict[int, list[SubState]] = {}
        for row in session.execute(select(*_columns(PERSON_SUB_FIELDS))
                                   .where(one_of(session, SUB.c.subscriber_id, chunk)).order_by(SUB.c.id)):
            subs.setdefault(row.subscriber_id, []).append(
                sub_state(row, PERSON_SUB_FIELDS, charges_made=made[row.id] if payments else None))
        by_sub_id = {x.id: x for group in subs.values() for x in group}
        open_: dict[int, list[PaymentState]] = {}
        paid: dict[int, int] = {}
        for row in pay_rows:
            if row.status == "succeeded":
                paid[row.subscriber_id] = paid.get(row.subscriber_id, 0) + 1
            elif row.status in OPEN_PAYMENT:
                open_.setdefault(row.subscriber_id, []).append(
                    payment_state(row._mapping, by_sub_id.get(row.subscription_id)))
        people = select(*s_cols).where(one_of(session, PERSON.c.id, chunk), PERSON.c.erased_at.is_(None))
        for row in session.execute(people):
            yield _subscriber(dict(row._mapping), tuple(subs.get(row.id, ())),
                              tuple(open_.get(row.id, ())), paid.get(row.id, 0))


def _live_subscriber():
    return exists().where(PERSON.c.id == SUB.c.subscriber_id, PERSON.c.erased_at.is_(None))


def subscriptions_between(session: Session, column, span: tuple[datetime, datetime],
                          statuses: Iterable[str]) -> list[SubState]:
    """Subscriptions in `statuses` whose `column` falls in [start, end): an index range scan
    on (status, next_renewal_at) for renewals."""
    start, end = span
    column = SUB.c[column.key]
    query = (select(*[_time_column(k, column) for k in TIME_FIELDS])
             .where(SUB.c.status.in_(list(statuses)), column >= start, column < end, _live_subscriber()))
    return [sub_state(row, TIME_FIELDS) for row in session.execute(query)]


def ending_between(session: Session, span: tuple[datetime, datetime]) -> list[SubState]:
    """Running subscriptions set to end at period end whose period ends in [start, end): a
    range search on ix_subscription_ending."""
    start, end = span
    anchor = SUB.c.current_period_end
    query = (select(*[anchor if k == anchor.key else _time_column(k, anchor) for k in TIME_FIELDS])
             .where(SUB.c.cancel_at_period_end.is_(True), anchor >= start, anchor < end,
                    SUB.c.status.in_(RUNNING), _live_subscriber()))
    return [sub_state(row, TIME_FIELDS) for row in session.execute(query)]


def last_charge_between(session: Session, span: tuple[datetime, datetime]) -> list[SubState]:
    """Running subscriptions that expire after a number of charges whose next charge is in
    [start, end), with the charges they have made (their paid payments)."""
    start, end = span
    anchor = SUB.c.next_renewal_at
    made = (select(func.count()).where(PAY.c.subscription_id == SUB.c.id, PAY.c.status == "succeeded")
            .scalar_subquery().label("charges_made"))
    query = (select(*[_time_column(k, anchor) for k in TIME_FIELDS], made)
             .where(SUB.c.charges_limit.is_not(None), anchor >= start, anchor < end,
                    SUB.c.status.in_(RUNNING), _live_subscriber()))
    return [sub_state(row, [*TIME_FIELDS, *COUNTED]) for row in session.execute(query)]


def _time_column(name: str, anchor):
    """Decoding datetimes is most of a row's cost: the billing period is read only where the
    interval is unknown (the rule's fallback), the trial end only when it is the anchor."""
    column = SUB.c[name]
    if name in ("current_period_start", "current_period_end"):
        return case((SUB.c.interval.is_(None), column)).label(name)
    if name == "trial_end" and anchor.key != "trial_end":
        return null().label(name)
    return column


def open_payments(session: Session, start: datetime, end: datetime) -> list[PaymentState]:
    """Unpaid failed payments whose first failure is in [start, end), or whose platform's
    next attempt is at or after `start` (its schedule may run past the hub's cadence), with
    their subscription."""
    query = (select(*_columns(PAYMENT_OWN, PAY), SUB.c.source_id.label("subscription_source_id"),
                    SUB.c.status.label("subscription_status"), SUB.c.plan,
                    SUB.c.update_payment_url.label("subscription_update_payment_url"))
             .select_from(PAY.outerjoin(SUB, SUB.c.id == PAY.c.subscription_id))
             .where(PAY.c.status.in_(OPEN_PAYMENT), PAY.c.first_failed_at.is_not(None),
                    or_(and_(PAY.c.first_failed_at >= start, PAY.c.first_failed_at < end),
                        PAY.c.next_retry_at >= start),
                    exists().where(PERSON.c.id == PAY.c.subscriber_id, PERSON.c.erased_at.is_(None))))
    names = [*PAYMENT_OWN, "subscription_source_id", "subscription_status", "plan",
             "subscription_update_payment_url"]
    return [PaymentState(**dict(zip(names, row))) for row in session.execute(query)]


def payment(session: Session, source: str, source_id: str) -> PaymentState | None:
    """One payment's state (event path)."""
    row = session.scalar(select(Payment).where(Payment.source == source, Payment.source_id == str(source_id)))
    if row is None:
        return None
    sub = session.get(Subscription, row.subscription_id) if row.subscription_id else None
    return payment_state(row, sub_state(sub) if sub else None)


def started_between(session: Session, spans: list[tuple[datetime, datetime]]) -> set[int]:
    """Subscribers with a subscription started in one of the spans (the rule checks it was
    their first)."""
    if not spans:
        return set()
    query = select(SUB.c.subscriber_id).where(or_(*[and_(SUB.c.started_at >= a, SUB.c.started_at < b)
                                                    for a, b in spans]))
    return {x for x in session.scalars(query) if x is not None}


def ended_between(session: Session, span: tuple[datetime, datetime]) -> set[int]:
    start, end = span
    query = select(Subscription.subscriber_id).where(
        Subscription.status.in_(ENDED), Subscription.canceled_at >= start, Subscription.canceled_at < end)
    return {x for x in session.scalars(query) if x is not None}


def card_holders(session: Session, months: list[tuple[int, int]]) -> Iterator[tuple[int, dict]]:
    """(id, cards) of subscribers with a card expiring in one of the (year, month)s.

    JSON has no portable index: a LIKE on the text drops most rows cheaply, then the
    database's JSON functions test each card (other databases: the rule tests them).
    """
    text_ = cast(Subscriber.cards, String)
    conditions = [text_.like(f'%"exp_month":%{month}%') for _, month in months]
    # The LIKE prefilter is cheap; the exact test keeps the rows the rule must decode to
    # the few that matter.
    exact = card_expiring_in(session, "subscriber.cards", months)
    query = select(Subscriber.id, Subscriber.cards).where(Subscriber.erased_at.is_(None), or_(*conditions))
    if exact is not None:
        query = query.where(exact)
    return iter(session.execute(query.execution_options(yield_per=5000)))


def lifecycle_candidates(session: Session, window: Window, bounds: dict[str, tuple[int, ...]],
                         new_days: int) -> set[int]:
    """Subscribers whose stage or score may change in the window with no new data: an
    inactivity or tenure day count reaches a boundary. One range per column and boundary,
    so each query can use that column's index."""
    def within(column, days):
        return or_(*[and_(column >= a, column < b) for a, b in (window.span(-d) for d in days)])

    S = Subscriber
    running = exists().where(Subscription.subscriber_id == S.id, Subscription.status.in_(RUNNING))
    queries_ = [
        # inactivity counts only without a running subscription
        select(S.id).where(within(S.last_activity_at, bounds["inactive"]), ~running),
        select(S.id).where(within(S.first_seen_at, bounds["inactive"]), S.last_activity_at.is_(None), ~running),
        select(S.id).where(within(S.first_order_at, bounds["tenure"])),
        # sign-up alone only ends "new"
        select(S.id).where(within(S.first_seen_at, (new_days,)), S.first_order_at.is_(None)),
        select(Subscription.subscriber_id).where(within(Subscription.started_at, bounds["tenure"])),
    ]
    ids: set[int] = set()
    for query in queries_:
        ids.update(x for x in session.scalars(query) if x is not None)
    return ids


def stock_holders(session: Session, item_ids: list[str]) -> list[SubState]:
    """Running subscriptions whose product list may hold one of the ids (text prefilter)."""
    text = cast(Subscription.product_ids, String)
    query = (select(*_columns(SUB_FIELDS))
             .where(Subscription.status.in_(("active", "trialing")),
                    or_(*[text.like(f"%{i}%") for i in item_ids]), _live_subscriber()))
    return [sub_state(row) for row in session.execute(query)]


def held_triggers(session: Session, subscriber_id: int, rule_prefix: str) -> list[tuple[str, str, str]]:
    """(rule, occasion, status) of a subscriber's triggers whose rule starts with the prefix."""
    query = select(Trigger.rule, Trigger.occasion, Trigger.status).where(
        Trigger.subscriber_id == subscriber_id, Trigger.rule.startswith(rule_prefix, autoescape=True))
    return [tuple(r) for r in session.execute(query)]
