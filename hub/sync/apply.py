"""Apply canonical events to the subscriber model.

`apply_event` returns what changed, for the timeline. Older source state never
overwrites newer: every record keeps the source's own updated-at, and an event
older than it is reported stale and changes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import or_, select, true
from sqlalchemy.orm import Session

from hub import events as ev
from hub.events import CanonicalEvent
from hub.models import LIVE_STATUSES, Order, OrderRefunds, Payment, Subscriber, Subscription
from hub.sync import compliance, inference
from hub.sync.identity import Known, find_subscriber, resolve
from hub.values import add_intervals, normalize_email, normalize_phone, plan_unknown


@dataclass
class Changes:
    """What one event did to the model."""

    event: str
    subscriber: Subscriber | None = None
    changed: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stale: bool = False
    # The payment a payment event updated: an attempt's billing cycle may carry another id.
    payment_source_id: str | None = None

    def set(self, obj, attr: str, value, label: str) -> None:
        old = getattr(obj, attr)
        if old != value:
            setattr(obj, attr, value)
            self.changed.append({"what": label, "field": attr, "from": _show(old), "to": _show(value)})

    def to_dict(self) -> dict:
        return {"event": self.event, "subscriber_id": self.subscriber.id if self.subscriber else None,
                "changed": self.changed, "notes": self.notes, "stale": self.stale}


def _show(value):
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _newer(incoming: datetime, held: datetime | None) -> bool:
    # Equal times apply: two events of one second are both news; the later one we see wins.
    return held is None or incoming >= held


def apply_event(session: Session, event: CanonicalEvent, people: Known | None = None) -> Changes:
    """Apply one canonical event; returns what changed. `people`: the drained batch's
    identity index (hub.sync.identity.batch), asked before the database."""
    changes = Changes(event.name)
    applier = APPLIERS.get(event.name)
    if applier is None:
        changes.notes.append("nothing to change")
        return changes
    applier(session, event, changes, people)
    return changes


def _subscriber(session: Session, event: CanonicalEvent, changes: Changes, create: bool = True,
                people: Known | None = None):
    if create:
        subscriber = resolve(session, event.source, event.customer, changes, people)
    else:
        subscriber = find_subscriber(session, event.source, event.customer, people)
    changes.subscriber = subscriber
    if subscriber is not None:
        _touch(subscriber, event.occurred_at)
    return subscriber


def _touch(subscriber: Subscriber, at: datetime) -> None:
    if subscriber.first_seen_at is None or (subscriber.id is None and at < subscriber.first_seen_at):
        subscriber.first_seen_at = at


def _activity(subscriber: Subscriber, at: datetime) -> None:
    if subscriber.last_activity_at is None or at > subscriber.last_activity_at:
        subscriber.last_activity_at = at


def apply_customer(session, event, changes, people=None):
    subscriber = _subscriber(session, event, changes, people=people)
    if subscriber is None:
        changes.notes.append("no customer id or email: nothing to link")
        return
    if not _newer(event.occurred_at, subscriber.profile_updated_at):
        changes.stale = True
        changes.notes.append("older than the profile the hub holds: ignored")
        return
    c = event.customer
    label = "profile"
    email = normalize_email(c.get("email"))
    if email and email != subscriber.email:
        taken = session.scalar(select(Subscriber.id).where(Subscriber.email == email))
        if taken is None:
            changes.set(subscriber, "email", email, label)
    phone = normalize_phone(c.get("phone"))
    if phone:
        changes.set(subscriber, "phone", phone, label)
    for attr in ("first_name", "last_name"):
        if c.get(attr):
            changes.set(subscriber, attr, c[attr], label)
    if c.get("created_at") and c["created_at"] < subscriber.first_seen_at:
        subscriber.first_seen_at = c["created_at"]
    if "default_card" in event.data:
        _mark_default_card(subscriber, event.source, event.data["default_card"], changes)
    subscriber.profile_updated_at = event.occurred_at


def _mark_default_card(subscriber, source: str, card_id: str | None, changes) -> None:
    """Flag the source's card it charges. A default named before its card arrives is held as
    a card without expiry, which the card event then fills in."""
    key = f"{source}:{card_id}" if card_id else None
    cards = {k: {**card, "default": k == key} for k, card in subscriber.cards.items()
             if k.startswith(source + ":")}
    if key and key not in cards:
        cards[key] = {"default": True}
    if any(subscriber.cards.get(k) != card for k, card in cards.items()):
        changes.changed.append({"what": "card on file", "field": "default",
                                "from": _default_of(subscriber.cards, source), "to": key})
        subscriber.cards = {**subscriber.cards, **cards}


def _default_of(cards: dict, source: str) -> str | None:
    return next((k for k, card in cards.items() if k.startswith(source + ":") and card.get("default")), None)


def apply_customer_deleted(session, event, changes, people=None):
    subscriber = _subscriber(session, event, changes, create=False, people=people)
    if subscriber is None:
        changes.notes.append("unknown customer")
        return
    changes.notes.append(f"deleted on {event.source}; the hub keeps the history")


def apply_consent(session, event, changes, people=None):
    subscriber = _subscriber(session, event, changes, people=people)
    if subscriber is None:
        return
    channel = event.data["channel"]
    held = subscriber.consent.get(channel, {})
    at = event.data.get("consented_at") or event.occurred_at
    held_at = held.get("at")
    if held_at and at.isoformat() < held_at:
        changes.stale = True
        changes.notes.append(f"{channel} consent older than the one held: ignored")
        return
    new = {"state": event.data["state"], "source": event.source, "at": at.isoformat(),
           "opt_in_level": event.data.get("opt_in_level")}
    if held.get("state") != new["state"]:
        changes.changed.append({"what": f"{channel} consent", "field": "state",
                                "from": held.get("state"), "to": new["state"]})
    subscriber.consent = {**subscriber.consent, channel: new}


def apply_order(session, event, changes, people=None):
    subscriber = _subscriber(session, event, changes, people=people)
    d = event.data
    # A subscription app's order names the store order it made (Recharge: the Shopify order),
    # as the store's own webhook does: one order, whichever source told of it first.
    order = session.scalar(select(Order).where(Order.source_id == str(d["source_id"]))
                           .order_by((Order.source == event.source).desc()).limit(1))
    label = f"order {d.get('number') or d['source_id']}"
    if order is None:
        order = Order(source=event.source, source_id=str(d["source_id"]), total=0, refunded=0)
        session.add(order)
        if subscriber is not None:
            subscriber.orders_count += 1
        changes.changed.append({"what": label, "field": "created", "from": None, "to": True})
    elif not _newer(event.occurred_at, order.source_updated_at) and event.name != ev.ORDER_PAID:
        changes.stale = True
        changes.notes.append(f"{label}: older than the state held: ignored")
        return
    order.subscriber_id = subscriber.id if subscriber else order.subscriber_id
    for attr in ("number", "total", "currency", "financial_status", "is_subscription", "placed_at",
                 "line_items"):
        if d.get(attr) is not None:
            changes.set(order, attr, d[attr], label)
    order.source_updated_at = max(event.occurred_at, order.source_updated_at or event.occurred_at)
    if subscriber is None:
        return
    placed = d.get("placed_at") or event.occurred_at
    if subscriber.first_order_at is None or placed < subscriber.first_order_at:
        subscriber.first_order_at = placed
    if subscriber.last_order_at is None or placed > subscriber.last_order_at:
        subscriber.last_order_at = placed
    _activity(subscriber, placed)
    if event.name == ev.ORDER_PAID and not order.paid:
        order.paid = True
        # An order that opened a subscription billed by invoices is counted when its
        # invoice is paid (payment.succeeded); counting both would double the spend. So is a
        # renewal order whose billing attempt or charge was paid first.
        if _paid_by_payment(session, order.source_id, subscriber.currency):
            changes.notes.append(f"{label}: its renewal payment already counted the money")
        elif not d.get("subscription_source_id"):
            _add_spend(subscriber, d.get("total") or 0, d.get("currency"), changes)
        _settle_refunds_of(session, [order.source_id], subscriber, changes, order)
    if event.name == ev.ORDER_CANCELLED:
        changes.set(order, "cancelled", True, label)
    elif event.source == "shopify" and not order.cancelled:
        inference.apply_order_lines(session, subscriber, event.customer.get("source_id"), d.get("line_items"),
                                    placed, d.get("currency"), changes)


def _paid_by_payment(session: Session, order_id: str, spend_currency: str | None) -> bool:
    """Whether a paid billing attempt or charge names this order and counted the money: one in
    another currency than the spend is kept in (a customer's own, where the order is in the
    shop's) counted nothing, and leaves the order to count it."""
    return session.scalar(select(Payment.id).where(
        Payment.order_source_id == order_id, Payment.status == "succeeded",
        _counted_in(Payment.currency, spend_currency)).limit(1)) is not None


def _paid_as_order(session: Session, order_id: str | None, spend_currency: str | None) -> bool:
    """Whether the order a payment made was already counted as a paid order (in the currency
    spend is kept in)."""
    return order_id is not None and session.scalar(
        select(Order.id).where(Order.source_id == order_id, Order.paid.is_(True),
                               _counted_in(Order.currency, spend_currency)).limit(1)) is not None


def _counted_in(column, spend_currency: str | None):
    """Money in this column's currency was added to spend (see _add_spend)."""
    if spend_currency is None:
        return true()
    return or_(column.is_(None), column == spend_currency)


def _add_spend(subscriber: Subscriber, amount: int, currency: str | None, changes: Changes) -> None:
    if not amount:
        return
    if subscriber.currency and currency and currency != subscriber.currency:
        changes.notes.append(f"spend in {currency} not added to lifetime value kept in {subscriber.currency}")
        return
    subscriber.currency = subscriber.currency or currency
    changes.set(subscriber, "lifetime_spend", subscriber.lifetime_spend + amount, "lifetime value")


def apply_refund(session, event, changes, people=None):
    d = event.data
    order_id = str(d.get("order_source_id"))
    # A subscription app's refund names the store order it paid for (Recharge: the Shopify
    # order), which the store's own refund names too: one order, refunded once.
    order = session.scalar(select(Order).where(Order.source_id == order_id)
                           .order_by((Order.source == event.source).desc()).limit(1))
    subscriber = _subscriber(session, event, changes, create=bool(event.customer), people=people)
    if subscriber is None and order is not None and order.subscriber_id:
        subscriber = session.get(Subscriber, order.subscriber_id)
        changes.subscriber = subscriber
    refunds = session.scalar(select(OrderRefunds).where(OrderRefunds.order_source_id == order_id))
    if refunds is None:
        refunds = OrderRefunds(order_source_id=order_id, reported={}, counted=0, currency=d.get("currency"))
        session.add(refunds)
    reported = dict(refunds.reported.get(event.source) or {})
    if d.get("refunded_total") is not None:
        # A running total (Recharge's total_refunds, what a Stripe charge's refunds still give
        # back): the newest holds every refund the source told of before, and goes down when
        # one failed; an older one delivered late changes nothing. Kept under its time. The
        # source's other entries (a chargeback, a dispute won back) stay beside it.
        _keep_newest_total(reported, event.occurred_at.isoformat(), d["refunded_total"])
    else:
        # One refund by its id and time: a retry or replay of it replaces itself. A dispute
        # won back is one of a negative amount.
        reported[f"{d.get('source_id')}@{event.occurred_at.isoformat()}"] = d.get("amount") or 0
    refunds.reported = {**refunds.reported, event.source: reported}  # a new dict: the JSON column sees it
    _settle_refunds(session, refunds, subscriber, changes, order)


def _keep_newest_total(reported: dict, at: str, total: int) -> None:
    """Put a source's running total reported at `at` (ISO, UTC) in `reported` under
    "total@<at>" unless a newer one is there (the same time: the larger), dropping the older.
    A "total" without a time (before times were kept) is older than any."""
    held = {key: (key.partition("@")[2], value) for key, value in reported.items()
            if key == "total" or key.startswith("total@")}
    if held and max(held.values()) > (at, total):
        return
    for key in held:
        del reported[key]
    reported[f"total@{at}"] = total


def _settle_refunds_of(session: Session, order_ids, subscriber: Subscriber, changes: Changes,
                       order: Order | None = None) -> None:
    """Take off the refunds that waited for this order's money (they arrived before it)."""
    for order_id in {str(i) for i in order_ids if i}:
        refunds = session.scalar(select(OrderRefunds).where(OrderRefunds.order_source_id == order_id))
        if refunds is not None:
            held = order or session.scalar(select(Order).where(Order.source_id == order_id).limit(1))
            _settle_refunds(session, refunds, subscriber, changes, held)


def _settle_refunds(session: Session, refunds: OrderRefunds, subscriber: Subscriber | None, changes: Changes,
                    order: Order | None) -> None:
    """Bring what was taken off spend for one order to what it has given back.

    The order's refund is the largest total any source reports (each source sees the same
    money), never more than the order took. Spend never goes below zero: what a refund that
    arrives before its money cannot take off yet waits, and is taken when the money is counted.
    Money that came back (a dispute won) is added to spend again.
    """
    given_back = max(0, max((sum(by_key.values()) for by_key in refunds.reported.values()), default=0))
    paid = order.total if order is not None and order.total else _paid_amount(session, refunds.order_source_id)
    if paid:
        given_back = min(given_back, max(paid, refunds.counted))
    if order is not None:
        changes.set(order, "refunded", given_back, f"order {order.number or order.source_id}")
    owed = given_back - refunds.counted
    if subscriber is None or owed == 0:
        return
    if owed < 0:
        changes.set(subscriber, "lifetime_spend", subscriber.lifetime_spend - owed, "lifetime value")
        refunds.counted += owed
        return
    taken = min(owed, subscriber.lifetime_spend)
    if taken:
        changes.set(subscriber, "lifetime_spend", subscriber.lifetime_spend - taken, "lifetime value")
        refunds.counted += taken


def _paid_amount(session: Session, order_id: str) -> int | None:
    """What a paid payment that made this order (or is it) took."""
    return session.scalar(select(Payment.amount).where(
        or_(Payment.order_source_id == order_id, Payment.source_id == order_id),
        Payment.status == "succeeded").limit(1))


SUBSCRIPTION_FIELDS = ("status", "plan", "plan_id", "interval", "interval_count", "amount", "currency",
                       "quantity", "current_period_start", "current_period_end", "next_renewal_at",
                       "resumes_at", "trial_end", "cancel_at_period_end", "canceled_at", "usage_limit",
                       "charges_limit", "product_ids", "update_payment_url")
# What a renewal charges follows from these; a change of any outdates a notice of its charge.
_PRICE_FIELDS = ("plan_id", "amount", "currency", "quantity", "interval", "interval_count")
# Fields whose absence in an event means "none", not "unknown".
_CLEARABLE = ("next_renewal_at", "resumes_at", "trial_end", "canceled_at", "charges_limit")


# What a newer event said of a subscription known by its ids alone, which an older whole record
# of it (a listing, a replay) leaves as it is: whether it runs, and how it ended.
_SAID_BY_IDS = ("status", "cancel_at_period_end", "canceled_at")


def _fill_in(session: Session, subscription: Subscription, d: dict, changes, label: str) -> None:
    """An older whole record of a subscription the hub knows by its ids alone: its plan, price,
    lines and dates fill in what the ids did not say; the status stays the newer event's, and
    an ended one gets no next renewal."""
    for attr in SUBSCRIPTION_FIELDS:
        if attr in _SAID_BY_IDS or d.get(attr) is None:
            continue
        if attr == "next_renewal_at" and subscription.status not in LIVE_STATUSES:
            continue
        changes.set(subscription, attr, d[attr], label)
    changes.notes.append(f"{label}: older than the state its ids gave "
                         f"({subscription.source_updated_at.isoformat()}): filled in what they did not say")
    inference.supersede(session, subscription, changes)  # it names its product now


def apply_subscription(session, event, changes, people=None):
    d = dict(event.data)
    if event.name == ev.SUBSCRIPTION_CANCELED:
        d["status"] = d.get("status") if d.get("status") in ("canceled", "expired") else "canceled"
        d["next_renewal_at"] = None
        d.setdefault("canceled_at", event.occurred_at)
    subscription = session.scalar(select(Subscription).where(
        Subscription.source == event.source, Subscription.source_id == str(d["source_id"])))
    subscriber = _subscriber(session, event, changes, create=True, people=people)
    label = f"subscription {d.get('plan') or d['source_id']}"
    if subscription is None:
        status = d.get("status") or "active"
        # It begins once live: one awaiting its first payment (incomplete), or first seen ended
        # without it (the normalizer's started_at None), has not begun.
        begun = status != "incomplete" and d.get("started_at", event.occurred_at) is not None
        subscription = Subscription(source=event.source, source_id=str(d["source_id"]), status=status,
                                    started_at=event.occurred_at if begun else None,
                                    interval_count=1, quantity=1, cancel_at_period_end=False,
                                    product_ids=[])
        session.add(subscription)
        changes.changed.append({"what": label, "field": "created", "from": None, "to": subscription.status})
    elif not _newer(event.occurred_at, subscription.source_updated_at):
        if subscription.known_by_ids_alone and not plan_unknown(d.get("plan"), d.get("plan_id"), d.get("amount")):
            _fill_in(session, subscription, d, changes, label)
            return
        changes.stale = True
        changes.notes.append(f"{label}: older than the state held "
                             f"({subscription.source_updated_at.isoformat()}): ignored")
        return
    if subscriber is not None:
        subscription.subscriber_id = subscriber.id
        subscription.subscriber = subscriber
        if subscription.id is None:
            _activity(subscriber, event.occurred_at)
    priced = [getattr(subscription, attr) for attr in _PRICE_FIELDS]
    for attr in SUBSCRIPTION_FIELDS:
        if attr in d and (d[attr] is not None or attr in _CLEARABLE):
            changes.set(subscription, attr, d[attr], label)
    if subscription.renewal_amount is not None and priced != [getattr(subscription, a) for a in _PRICE_FIELDS]:
        # A notice of the renewal's charge told of the old price: the price changed since.
        changes.set(subscription, "renewal_amount", None, label)
        changes.set(subscription, "renewal_amount_at", None, label)
    if subscription.started_at is None and subscription.status in LIVE_STATUSES:
        changes.set(subscription, "started_at", event.occurred_at, label)  # its first payment came
    subscription.source_updated_at = event.occurred_at
    inference.supersede(session, subscription, changes)


def apply_trial_ending(session, event, changes, people=None):
    subscriber = _subscriber(session, event, changes, people=people)
    d = event.data
    subscription = session.scalar(select(Subscription).where(
        Subscription.source == event.source, Subscription.source_id == str(d.get("source_id"))))
    if subscription is not None and d.get("trial_end"):
        changes.set(subscription, "trial_end", d["trial_end"],
                    f"subscription {subscription.plan or subscription.source_id}")
    if subscriber is None:
        changes.notes.append("unknown customer")


# Canonical payment event → the statuses its data may set, the first when it names none.
# A failure the platform will not retry and a closed payment end dunning (hub.sync.rules.dunning).
PAYMENT_STATUSES = {ev.PAYMENT_SUCCEEDED: ("succeeded",),
                    ev.PAYMENT_FAILED: ("failed", "retries_exhausted"),
                    ev.PAYMENT_ACTION_REQUIRED: ("action_required",),
                    ev.PAYMENT_CLOSED: ("void", "uncollectible")}
# Statuses of a payment still owed after a failure: those the platform may still retry,
# and the one it will not (no next attempt).
RETRIED = ("failed", "action_required")
OWED = (*RETRIED, "retries_exhausted")


def _cycle_payment(session: Session, event: CanonicalEvent) -> Payment | None:
    """The payment of the billing cycle an attempt belongs to, when its source names attempts.

    Shopify's billing-attempt webhooks carry the attempt's idempotency key and order, not its
    cycle (paymentGroupId, "shared between retried payment attempts", is only on the GraphQL
    object: https://shopify.dev/docs/api/admin-graphql/latest/objects/SubscriptionBillingAttempt).
    A contract bills one cycle at a time, so the contract's latest payment is the cycle while
    it is unpaid, and an attempt older than its payment (a late delivery) is of that cycle too.
    """
    d = event.data
    if not (d.get("per_attempt") and d.get("subscription_source_id")):
        return None
    found = session.execute(
        select(Payment, Subscription).join(Subscription, Payment.subscription_id == Subscription.id)
        .where(Payment.source == event.source, Subscription.source == event.source,
               Subscription.source_id == str(d["subscription_source_id"]))
        .order_by(Payment.id.desc()).limit(1)).first()
    if found is None:
        return None
    latest, subscription = found
    if latest.status in OWED:
        return latest if _in_cycle(latest, subscription, event.occurred_at) else None
    if not _newer(event.occurred_at, latest.source_updated_at):
        return latest
    return None


def _in_cycle(payment: Payment, subscription: Subscription, at: datetime) -> bool:
    """Whether an attempt at `at` can still be a retry of an unpaid cycle.

    A contract's billing cycles are consecutive spans of its billing policy's interval
    (SubscriptionBillingCycle, picked by index or date with billingCycleSelector; an attempt
    without one bills the current cycle: https://shopify.dev/docs/api/admin-graphql/latest/
    input-objects/SubscriptionBillingAttemptInput). So an attempt one interval or more after
    the cycle's first attempt bills a later cycle, whatever became of this one.
    """
    first, interval = payment.first_failed_at, subscription.interval
    if first is None or interval not in ("day", "week", "month", "year"):
        return True  # no bound known: retries of the one unpaid cycle
    return at < add_intervals(first, interval, subscription.interval_count or 1)


def apply_payment(session, event, changes, people=None):
    subscriber = _subscriber(session, event, changes, people=people)
    d = event.data
    payment = session.scalar(select(Payment).where(Payment.source == event.source,
                                                   Payment.source_id == str(d["source_id"])))
    if payment is None:
        payment = _cycle_payment(session, event)
    label = f"payment {payment.source_id if payment is not None else d['source_id']}"
    if payment is None:
        payment = Payment(source=event.source, source_id=str(d["source_id"]), status="new", attempt_count=0)
        session.add(payment)
    elif not _newer(event.occurred_at, payment.source_updated_at):
        changes.stale = True
        changes.notes.append(f"{label}: older than the state held: ignored")
        return
    changes.payment_source_id = payment.source_id
    allowed = PAYMENT_STATUSES[event.name]
    status = d["status"] if d.get("status") in allowed else allowed[0]
    was_paid = payment.status == "succeeded"
    changes.set(payment, "status", status, label)
    for attr in ("amount", "currency", "next_retry_at", "failure_reason", "decline_code",
                 "hard_decline", "due_at", "update_payment_url", "paid_at"):
        if d.get(attr) is not None:
            changes.set(payment, attr, d[attr], label)
    if d.get("attempt_count") is not None:
        changes.set(payment, "attempt_count", d["attempt_count"], label)
    elif status == "failed":
        changes.set(payment, "attempt_count", (payment.attempt_count or 0) + 1, label)
    if status in OWED and payment.first_failed_at is None:
        payment.first_failed_at = event.occurred_at
    if status not in RETRIED:
        payment.next_retry_at = None  # paid, or no attempt to come
    if status == "succeeded":
        payment.paid_at = payment.paid_at or d.get("paid_at") or event.occurred_at
    if d.get("subscription_source_id"):
        subscription = session.scalar(select(Subscription).where(
            Subscription.source == event.source,
            Subscription.source_id == str(d["subscription_source_id"])))
        if subscription is not None:
            payment.subscription_id = subscription.id
    # A payment whose order counts the money leaves the order free to count it.
    if status == "succeeded" and d.get("order_source_id") and not d.get("spend_from_order"):
        payment.order_source_id = str(d["order_source_id"])
    payment.source_updated_at = event.occurred_at
    if subscriber is not None:
        payment.subscriber_id = subscriber.id
        payment.subscriber = subscriber
        if status == "succeeded" and not was_paid:
            _activity(subscriber, event.occurred_at)
            if d.get("spend_from_order") and d.get("order_source_id"):
                changes.notes.append(f"{label}: its order {d['order_source_id']} counts the money, "
                                     "in the shop's currency")
            elif _paid_as_order(session, payment.order_source_id, subscriber.currency):
                changes.notes.append(f"{label}: its order {payment.order_source_id} already counted the money")
            else:
                _add_spend(subscriber, d.get("amount") or 0, d.get("currency"), changes)
            _settle_refunds_of(session, [payment.order_source_id, payment.source_id], subscriber, changes)


def apply_renewal_upcoming(session, event, changes, people=None):
    _subscriber(session, event, changes, people=people)
    d = event.data
    subscription = session.scalar(select(Subscription).where(
        Subscription.source == event.source, Subscription.source_id == str(d.get("subscription_source_id"))))
    if subscription is None or not d.get("renewal_at"):
        return
    label = f"subscription {subscription.plan or subscription.source_id}"
    if not _newer(event.occurred_at, subscription.source_updated_at):
        # A notice sent before the subscription's latest change (a date moved since) says nothing new.
        changes.stale = True
        changes.notes.append(f"{label}: renewal notice older than the subscription held: ignored")
        return
    changes.set(subscription, "next_renewal_at", d["renewal_at"], label)
    # What it will charge (a new price phase, a discount ending), in the subscription's currency;
    # or, for a schedule that no longer changes it, the subscription's own price again.
    if d.get("amount") is not None and d.get("currency") in (None, subscription.currency):
        changes.set(subscription, "renewal_amount", d["amount"], label)
        changes.set(subscription, "renewal_amount_at", d["renewal_at"], label)
    elif d.get("priced_as_subscription"):
        changes.set(subscription, "renewal_amount", None, label)
        changes.set(subscription, "renewal_amount_at", None, label)


def apply_card(session, event, changes, people=None):
    subscriber = _subscriber(session, event, changes, people=people)
    if subscriber is None:
        return
    d = event.data
    key = f"{event.source}:{d.get('source_id') or 'default'}"
    card = {k: d.get(k) for k in ("brand", "last4", "exp_month", "exp_year", "auto_updated")}
    card["updated_at"] = event.occurred_at.isoformat()
    card["expiring_notice"] = event.name == ev.PAYMENT_METHOD_EXPIRING
    held = subscriber.cards.get(key)
    if held and held.get("updated_at", "") > card["updated_at"]:
        changes.stale = True
        return
    if held and "default" in held:  # only the customer's own record says which card is the default
        card["default"] = held["default"]
    if held != card:
        changes.changed.append({"what": "card on file", "field": key, "from": _card_text(held),
                                "to": _card_text(card)})
    subscriber.cards = {**subscriber.cards, key: card}


def _card_text(card: dict | None) -> str | None:
    if not card or set(card) == {"default"}:  # nothing, or a default named before its card came
        return None
    if not card.get("exp_year"):
        return "removed"
    expiry = f"{card.get('exp_month')}/{card.get('exp_year')}"
    return f"{card.get('brand') or 'card'} •••• {card.get('last4') or '?'} exp {expiry}"


def apply_lookup_only(session, event, changes, people=None):
    _subscriber(session, event, changes, create=False, people=people)


# Compliance appliers (the work is in hub.sync.compliance) ---------------------------------

def apply_erase(session, event, changes, people=None):
    """customers/redact (a customer named) or shop/redact (none named: the whole shop).

    The identity needed to ask the tools to delete the person is left on
    `changes.erased` for hub.sync.inbox.decide (it plans the erase deliveries); nothing of
    it goes into `changes.changed`/`notes`, which are stored on the inbox row.
    """

    raw = [event.customer.get("email"), event.customer.get("phone")]
    if not event.customer:
        done = compliance.erase_shop(session, event.data.get("shop"))
        changes.notes.append(f"shop data erased: {len(done['subscribers'])} subscriber(s), "
                             f"{done['inbox_rows']} inbox row(s)")
        return
    subscriber = find_subscriber(session, event.source, event.customer, people)
    if subscriber is None or subscriber.erased_at is not None:
        count = compliance.erase_mentions(session, raw, source=event.source)
        changes.notes.append(f"no subscriber held (or already erased); {count} inbox row(s) scrubbed")
        return
    erased = compliance.erase_subscriber(session, subscriber, "customers/redact", also=raw,
                                      source=event.source)
    changes.subscriber = subscriber
    changes.erased = [erased]  # read by hub.sync.inbox.decide, never stored
    changes.notes.append("personal data erased; anonymous counts kept")


def apply_data_request(session, event, changes, people=None):
    """customers/data_request: store an export of everything held, for staff to send."""

    subscriber = find_subscriber(session, event.source, event.customer, people)
    if subscriber is not None and subscriber.erased_at is not None:
        subscriber = None
    request_id = event.data.get("request_id") or \
        f"{event.source}:{event.customer.get('source_id')}:{event.occurred_at:%Y%m%d%H%M%S}"
    compliance.store_data_request(session, request_id, subscriber, event.customer, event.source)
    changes.notes.append(f"data request {request_id}: export stored"
                         + ("" if subscriber is not None else " (no subscriber held)"))
    # changes.subscriber stays None: a request for data changes nothing, fires no rule.


def apply_app_uninstalled(session, event, changes, people=None):
    """app/uninstalled: Shopify calls and registration stop; data is kept until shop/redact."""

    compliance.record_uninstalled(session, event.data.get("shop"))
    changes.notes.append("app uninstalled: Shopify calls stop; data kept until shop/redact")


APPLIERS = {
    ev.CUSTOMER_UPSERTED: apply_customer,
    ev.CUSTOMER_DELETED: apply_customer_deleted,
    ev.CONSENT_CHANGED: apply_consent,
    ev.ORDER_PLACED: apply_order,
    ev.ORDER_PAID: apply_order,
    ev.ORDER_CANCELLED: apply_order,
    ev.ORDER_REFUNDED: apply_refund,
    ev.SUBSCRIPTION_UPSERTED: apply_subscription,
    ev.SUBSCRIPTION_CANCELED: apply_subscription,
    ev.TRIAL_ENDING: apply_trial_ending,
    ev.PAYMENT_SUCCEEDED: apply_payment,
    ev.PAYMENT_FAILED: apply_payment,
    ev.PAYMENT_ACTION_REQUIRED: apply_payment,
    ev.PAYMENT_CLOSED: apply_payment,
    ev.RENEWAL_UPCOMING: apply_renewal_upcoming,
    ev.PAYMENT_METHOD_EXPIRING: apply_card,
    ev.PAYMENT_METHOD_UPDATED: apply_card,
    # Compliance: see hub/sync/compliance.py and docs/compliance.md.
    ev.SUBSCRIBER_ERASE: apply_erase,
    ev.DATA_REQUEST: apply_data_request,
    ev.APP_UNINSTALLED: apply_app_uninstalled,
}

# Events whose applier finds or creates the subscriber its customer names, whatever else it
# finds (hub.sync.identity.batch creates the unknown ones of a drained batch together).
CREATES = frozenset({ev.CUSTOMER_UPSERTED, ev.CONSENT_CHANGED, ev.ORDER_PLACED, ev.ORDER_PAID,
                     ev.ORDER_CANCELLED, ev.ORDER_REFUNDED, ev.SUBSCRIPTION_UPSERTED,
                     ev.SUBSCRIPTION_CANCELED, ev.TRIAL_ENDING, ev.PAYMENT_SUCCEEDED,
                     ev.PAYMENT_FAILED, ev.PAYMENT_ACTION_REQUIRED, ev.RENEWAL_UPCOMING,
                     ev.PAYMENT_METHOD_EXPIRING, ev.PAYMENT_METHOD_UPDATED})
