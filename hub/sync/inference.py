"""Subscriptions inferred from selling-plan orders (Shopify stores whose subscriptions another app owns).

Contracts and billing attempts belong to the app that created them (Shopify Subscriptions,
Skio, Loop, Appstle…); what every store shows the hub is the orders those apps place. An
order line bought on a selling plan names it: `selling_plan_id` in Orders webhooks from API
2026-10 (https://shopify.dev/changelog/orders-webhooks-now-include-selling_plan_id-on-line-items),
the plan's display name ("Delivery every 2 weeks") in `LineItem.sellingPlan.name` of the Admin
GraphQL API (https://shopify.dev/docs/api/admin-graphql/latest/objects/LineItemSellingPlan) and
in `selling_plan_allocation.selling_plan.name` of storefront line items
(https://shopify.dev/docs/api/liquid/objects/selling_plan).

One inferred subscription per customer and selling plan: its cadence from the plan's name, or
from the gap between two of its orders when the payload names none; its last renewal is the
latest order; its next renewal an estimate (last renewal + cadence); it stays active while
orders keep coming and lapses (`expired`) once the estimate plus SHOPIFY_INFERRED_GRACE_DAYS
has passed. A subscription Recharge or a hub-owned contract describes for the same product
supersedes the inferred one, which is then removed rather than kept beside it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub import events as ev
from hub.models import Subscriber, Subscription
from hub.values import add_intervals as plus

# Sources whose subscriptions are the subscription app's own record: they win over an inference.
AUTHORITATIVE = ("recharge", "shopify")
# Without a cadence (one order of a plan whose name says none) the hub cannot tell a yearly plan from
# a cancelled monthly one; it lapses only after a year, since a Win Back sent to a customer who still
# subscribes is worse than a late one.
UNKNOWN_CADENCE = ("year", 1)
_WORDS = {"a": 1, "an": 1, "one": 1, "other": 2, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
          "eight": 8, "twelve": 12}
_UNITS = {"day": "day", "week": "week", "month": "month", "year": "year", "wk": "week", "mo": "month",
          "yr": "year"}
_EVERY = re.compile(r"\b(\d+|a|an|one|other|two|three|four|five|six|eight|twelve)?\s*[- ]?"
                    r"(day|week|wk|month|mo|year|yr)s?\b", re.IGNORECASE)
_ADVERBS = {"daily": ("day", 1), "weekly": ("week", 1), "biweekly": ("week", 2), "bi-weekly": ("week", 2),
            "fortnightly": ("week", 2), "monthly": ("month", 1), "bimonthly": ("month", 2),
            "bi-monthly": ("month", 2), "quarterly": ("month", 3), "yearly": ("year", 1),
            "annually": ("year", 1), "annual": ("year", 1)}


def cadence(name: str | None) -> tuple[str, int] | None:
    """(interval, count) a selling plan's name states: "Delivery every 2 Weeks" → ("week", 2)."""
    if not name:
        return None
    text = name.lower()
    found = _EVERY.search(text)
    if found:
        count = found.group(1) or "1"
        count = int(count) if count.isdigit() else _WORDS[count]
        if count > 0:
            return _UNITS[found.group(2)], count
    for word, value in _ADVERBS.items():
        if re.search(rf"\b{word}\b", text):
            return value
    return None


def cadence_of_gap(gap: timedelta) -> tuple[str, int] | None:
    """The cadence two consecutive orders of one plan suggest (calendar months, else weeks, else days)."""
    days = round(gap.total_seconds() / 86400)
    if days < 1:
        return None
    years = round(days / 365.25)
    if years >= 1 and abs(days - 365.25 * years) <= 3:
        return "year", years
    # Monthly orders come 28 to 31 days apart, a few days more after a retried payment: a gap
    # of 27 to 34 days reads as a month (a plan "every 4 weeks" says so in its name).
    months = round(days / 30.44)
    if months >= 1 and abs(days - 30.44 * months) <= 3 + months / 2:
        return "month", months
    weeks = round(days / 7)
    if weeks >= 1 and abs(days - 7 * weeks) <= 1:
        return "week", weeks
    return "day", days


def _days(interval: str, count: int) -> int:
    return {"day": 1, "week": 7, "month": 30, "year": 365}[interval] * count


@dataclass(frozen=True)
class PlanLine:
    """One order line bought on a selling plan."""

    plan_id: str
    plan_name: str | None
    title: str | None
    product_id: str | None
    variant_id: str | None
    quantity: int
    price: int | None


def plan_lines(line_items: list[dict]) -> list[PlanLine]:
    """The order's lines bought on a selling plan, one per plan (quantities of a plan added up)."""
    lines: dict[str, PlanLine] = {}
    for line in line_items or []:
        plan_id = line.get("selling_plan_id")
        if not plan_id:
            continue
        held = lines.get(plan_id)
        quantity = int(line.get("quantity") or 0) + (held.quantity if held else 0)
        lines[plan_id] = PlanLine(plan_id=str(plan_id), plan_name=line.get("selling_plan_name"),
                                  title=line.get("title"), product_id=line.get("product_id"),
                                  variant_id=line.get("variant_id"), quantity=quantity,
                                  price=line.get("price"))
    return list(lines.values())


def inferred_fields(held: Subscription | None, line: PlanLine, at: datetime, currency: str | None) -> dict:
    """What an order of `line`'s plan placed at `at` makes of the inferred subscription `held` (pure).

    An order older than the last renewal held changes nothing but may teach the cadence.
    """
    last = held.current_period_start if held is not None else None
    stated = cadence(line.plan_name)
    known = (held.interval, held.interval_count) if held is not None and held.interval else None
    learnt = None
    if last is not None and at != last:
        learnt = cadence_of_gap(abs(at - last))
        # A skipped delivery makes a longer gap: a gap only shortens a cadence learnt before.
        if known and learnt and _days(*learnt) >= _days(*known):
            learnt = None
    interval, count = stated or learnt or known or (None, None)
    fields = {"interval": interval, "interval_count": count}
    if last is not None and at <= last:
        if held.status == "active" and interval:
            fields.update(next_renewal_at=plus(last, interval, count), current_period_end=plus(last, interval, count))
        return fields
    plan = line.title or line.plan_name
    if line.title and line.plan_name:
        plan = f"{line.title} ({line.plan_name})"
    fields.update(
        status="active", plan=plan, plan_id=line.plan_id,
        amount=line.price * max(1, line.quantity) if line.price is not None else None,
        currency=currency, quantity=max(1, line.quantity),
        product_ids=[line.product_id] if line.product_id else [],
        current_period_start=at, current_period_end=plus(at, interval, count) if interval else None,
        next_renewal_at=plus(at, interval, count) if interval else None, canceled_at=None)
    return fields


def lapses_at(subscription: Subscription, grace_days: int) -> datetime | None:
    """When an active inferred subscription lapses if no order comes (estimate + grace)."""
    if subscription.next_renewal_at is not None:
        due = subscription.next_renewal_at
    elif subscription.current_period_start is not None:
        due = plus(subscription.current_period_start, *UNKNOWN_CADENCE)
    else:
        return None
    return due + timedelta(days=grace_days)


def _covers(subscription: Subscription, line: PlanLine) -> bool:
    """Whether an app's own subscription is the one `line` was bought on (same plan, variant or product)."""
    return (subscription.source in AUTHORITATIVE and subscription.is_live
            and ((subscription.plan_id is not None and subscription.plan_id in (line.plan_id, line.variant_id))
                 or (line.product_id is not None and line.product_id in (subscription.product_ids or []))))


def _label(subscription: Subscription) -> str:
    return f"subscription {subscription.plan or subscription.source_id} (inferred from selling-plan orders)"


def _drop(session: Session, subscriber: Subscriber, inferred: Subscription, by: Subscription, changes) -> None:
    changes.changed.append({"what": _label(inferred), "field": "superseded", "from": inferred.status,
                            "to": f"{ev.subscription_source(by.source)} subscription {by.source_id}"})
    if inferred in subscriber.subscriptions:
        subscriber.subscriptions.remove(inferred)
    session.delete(inferred)


def apply_order_lines(session: Session, subscriber: Subscriber, customer_id: str | None, line_items: list,
                      at: datetime, currency: str | None, changes) -> None:
    """Infer or advance the subscription of each selling-plan line of one Shopify order."""
    lines = plan_lines(line_items)
    if not lines:
        return
    if not customer_id:
        changes.notes.append("selling-plan order without a customer id: no subscription inferred")
        return
    for line in lines:
        source_id = f"{customer_id}:{line.plan_id}"
        held = session.scalar(select(Subscription).where(Subscription.source == ev.INFERRED_SOURCE,
                                                         Subscription.source_id == source_id))
        owner = next((s for s in subscriber.subscriptions if s is not held and _covers(s, line)), None)
        if owner is not None:
            if held is not None:
                _drop(session, subscriber, held, owner, changes)
            continue
        if held is None:
            held = Subscription(source=ev.INFERRED_SOURCE, source_id=source_id, status="active", started_at=at,
                                interval_count=1, quantity=1, cancel_at_period_end=False, product_ids=[])
            held.subscriber = subscriber
            session.add(held)
            changes.changed.append({"what": _label(held), "field": "created", "from": None, "to": "active"})
        label = _label(held)
        for attr, value in inferred_fields(held if held.current_period_start else None, line, at,
                                           currency).items():
            if value is not None or attr in ("next_renewal_at", "canceled_at", "current_period_end"):
                changes.set(held, attr, value, label)
        held.source_updated_at = max(at, held.source_updated_at or at)


def supersede(session: Session, subscription: Subscription, changes) -> None:
    """Remove the subscriber's inferred subscriptions that `subscription` (an app's own) describes."""
    subscriber = subscription.subscriber
    if subscriber is None or subscription.source not in AUTHORITATIVE or not subscription.is_live:
        return
    for inferred in [s for s in subscriber.subscriptions if s.source == ev.INFERRED_SOURCE]:
        line = PlanLine(plan_id=inferred.plan_id or "", plan_name=None, title=None,
                        product_id=(inferred.product_ids or [None])[0], variant_id=None, quantity=1, price=None)
        if _covers(subscription, line):
            _drop(session, subscriber, inferred, subscription, changes)


def lapse(session: Session, now: datetime, grace_days: int) -> list[int]:
    """Expire the active inferred subscriptions whose estimate + grace passed; their subscribers' ids."""
    lapsed = []
    rows = session.scalars(select(Subscription).where(Subscription.source == ev.INFERRED_SOURCE,
                                                      Subscription.status == "active"))
    for subscription in rows:
        until = lapses_at(subscription, grace_days)
        if until is not None and until <= now:
            subscription.status = "expired"
            subscription.canceled_at = until
            subscription.next_renewal_at = None
            subscription.source_updated_at = now
            if subscription.subscriber_id is not None:
                lapsed.append(subscription.subscriber_id)
    return lapsed
