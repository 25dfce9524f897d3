"""Lifecycle moments of one subscription, read from what an event changed: why it ended
(Subscription Cancelled's reason and churn type), Plan Changed, Subscription Paused /
Resumed, Renewal Skipped; Renew Now before a scheduled end; Payment Method Updated.

Pure functions over the rule state, the canonical event and the model's recorded changes:
every amount is the platform's (the proration is what it billed or credited, never one the
hub works out).
"""
from __future__ import annotations

from datetime import datetime, timedelta

from hub import events as ev
from hub.sync.rules import renewal
from hub.sync.rules.params import RuleParams
from hub.sync.rules.state import (
    OPEN_PAYMENT,
    Due,
    SubscriberState,
    SubState,
    Window,
    day_start,
    iso,
    local_day,
)
from hub.values import per_month, plan_unknown

RUNNING = ("trialing", "active", "past_due")


def why_cancelled(s: SubscriberState, sub: SubState, event) -> dict:
    """cancellation_reason (the platform's words) and churn_type: what the platform says,
    else involuntary when the subscription ended owing a failed payment (a platform that
    cancels after its retries, such as Recharge, names no machine-readable reason)."""
    d = event.data
    churn = d.get("churn_type")
    if churn not in ev.CHURN_TYPES:
        owing = any(x.subscription_source_id == sub.source_id and x.source == sub.source
                    and x.status in OPEN_PAYMENT for x in s.payments)
        churn = ev.INVOLUNTARY if owing else ev.VOLUNTARY
    why = {"cancellation_reason": d.get("cancellation_reason"), "churn_type": churn}
    if d.get("cancellation_comment"):
        why["cancellation_comment"] = d["cancellation_comment"]
    return why


# What makes a plan change: another plan, price, quantity or billing interval.
PLAN_FIELDS = ("plan", "plan_id", "amount", "quantity", "interval", "interval_count")


def was(changes) -> dict:
    """The subscription's fields as they were before this event, of those it changed."""
    return {c["field"]: c["from"] for c in changes.changed
            if str(c.get("what", "")).startswith("subscription")
            and (c.get("field") in (*PLAN_FIELDS, *SubState.__dataclass_fields__) or c.get("field") == "created")}


def plan_changed(sub: SubState, before: dict, event) -> Due | None:
    """Plan Changed when a running subscription the hub already held moved to another plan,
    price, quantity or interval; not when the hub learns a plan it never knew. `direction`
    compares the amounts per month (a monthly 25.00 to a yearly 240.00 is a downgrade);
    proration_amount is the platform's own figure."""
    moved = [k for k in PLAN_FIELDS if k in before and before[k] is not None]
    if not moved or not sub.is_live or "created" in before:
        return None
    # quantity is not rule state: unchanged, it is the event's own.
    old = {k: before[k] if k in before else getattr(sub, k, event.data.get(k)) for k in PLAN_FIELDS}
    if plan_unknown(old["plan"], old["plan_id"], old["amount"]):
        return None  # the plan was never known (a webhook read by its ids alone): learned, not changed
    old_rate = per_month(old["amount"], old["interval"], old["interval_count"])
    new_rate = per_month(sub.amount, sub.interval, sub.interval_count)
    direction = ("change" if not (old_rate and new_rate) or old_rate == new_rate
                 else "upgrade" if new_rate > old_rate else "downgrade")
    props = {**sub.properties(), "previous_plan": old["plan"], "previous_plan_id": old["plan_id"],
             "previous_amount": old["amount"], "previous_interval": old["interval"],
             "previous_quantity": old["quantity"], "direction": direction,
             "effective_at": iso(event.occurred_at),
             "proration_amount": event.data.get("proration_amount")}
    return Due(rule="plan-changed", occasion=f"{iso(event.occurred_at)}/{sub.ref}"[:120],
               name=ev.PLAN_CHANGED, properties=props,
               reason=f"{old['plan'] or '?'} → {sub.plan or '?'} ({direction})", due_at=event.occurred_at)


PAUSED_RULE, RESUMED_RULE, SKIPPED_RULE = "subscription-paused", "subscription-resumed", "renewal-skipped"
# Statuses a subscriber pauses from. A past_due subscription that turns paused is one whose
# platform stopped collecting after failed retries (Stripe `unpaid`): dunning, not a pause.
PAUSABLE = ("active", "trialing")


def paused_or_resumed(sub: SubState, before: dict, event, was_paused: bool) -> Due | None:
    """Subscription Paused when a running subscription is paused (its resume date, if the
    platform names one, as `resumes_at`); Subscription Resumed when one this rule saw paused
    (`was_paused`: a Subscription Paused is held for it) runs again."""
    old = before.get("status")
    at = iso(event.occurred_at)
    if old in PAUSABLE and sub.status == "paused":
        name, rule, props = ev.SUBSCRIPTION_PAUSED, PAUSED_RULE, {
            "paused_at": at, "resumes_at": iso(event.data.get("resumes_at"))}
    elif old == "paused" and sub.status in PAUSABLE and was_paused:
        name, rule, props = ev.SUBSCRIPTION_RESUMED, RESUMED_RULE, {"resumed_at": at}
    else:
        return None
    return Due(rule=rule, occasion=f"{at}/{sub.ref}"[:120], name=name, properties={**sub.properties(), **props},
               reason=f"subscription {sub.plan or sub.source_id} {old} → {sub.status}", due_at=event.occurred_at)


def renewal_skipped(sub: SubState, before: dict, event) -> Due | None:
    """Renewal Skipped when the platform says a renewal was skipped (Recharge's
    subscription/skipped, Shopify's subscription_billing_cycles/skip): the skipped date is
    the one the platform names (Shopify: a later cycle's too), else the renewal held before;
    the next one the date the platform moved it to (whose reminders follow,
    hub.sync.rules.renewal.reconcile)."""
    if not event.data.get("renewal_skipped"):
        return None
    skipped = iso(event.data.get("skipped_renewal_at")) or before.get("next_renewal_at") or iso(sub.next_renewal_at)
    return Due(rule=SKIPPED_RULE, occasion=f"{skipped or iso(event.occurred_at)}/{sub.ref}"[:120],
               name=ev.RENEWAL_SKIPPED,
               properties={**sub.properties(), "skipped_renewal_at": skipped},
               reason=f"renewal of {skipped or '?'} skipped", due_at=event.occurred_at)


CARD_RULE = "payment-method-updated"


def payment_method_updated(s: SubscriberState, event, changes) -> Due | None:
    """Payment Method Updated when the card the platform charges changed: a card added,
    replaced or given new details (by the customer or the card network) that is not known to
    be a spare, or another card made the default (Stripe's customer.updated). Not when one
    was removed. A dunning in progress on the same platform is named (`dunning_payment_id`):
    the new card is what a retry needs (orchestrate mode asks for one, hub.sync.rules.on_event)."""
    if event.name == ev.CUSTOMER_UPSERTED:
        key = next((c["to"] for c in changes.changed
                    if c.get("what") == "card on file" and c.get("field") == "default" and c.get("to")), None)
    else:
        key = f"{event.source}:{event.data.get('source_id') or 'default'}"
        if not any(c.get("field") == key for c in changes.changed) or _spare(s.cards, key, event.source):
            key = None
    card = s.cards.get(key) or {} if key else {}
    if not card.get("exp_year"):
        return None
    owed = sorted((x for x in s.payments if x.source == event.source and x.is_open),
                  key=lambda x: (x.first_failed_at, x.id))
    at = iso(event.occurred_at)
    props = {"source": event.source, "card_id": key.partition(":")[2], "brand": card.get("brand"),
             "last4": card.get("last4"), "exp_month": card.get("exp_month"), "exp_year": card.get("exp_year"),
             "auto_updated": bool(card.get("auto_updated")), "updated_at": at,
             "dunning_payment_id": owed[-1].source_id if owed else None}
    # Once per card and expiry: the card attached and then made the default is one update.
    occasion = f"{key}/{card.get('exp_year')}-{card.get('exp_month')}"[:120]
    return Due(rule=CARD_RULE, occasion=occasion, name=ev.PAYMENT_METHOD_UPDATED_TRIGGER,
               properties=props, reason=f"{card.get('brand') or 'card'} •••• {card.get('last4') or '?'} on file",
               due_at=event.occurred_at)


def _spare(cards: dict, key: str, source: str) -> bool:
    """The card is known not to be the one the platform charges (another is the default)."""
    if cards.get(key, {}).get("default") is False:
        return True
    return any(card.get("default") for k, card in cards.items() if k != key and k.startswith(source + ":"))


RENEW_PREFIX = "renew-now-"


def ends_at(sub: SubState) -> datetime | None:
    """When a subscription set to end ends: the end of its period (Stripe
    cancel_at_period_end, Chargebee non_renewing), or for one that expires after a number of
    charges (Recharge) its last charge, once the next charge is the last one."""
    if sub.cancel_at_period_end:
        return sub.current_period_end
    if sub.charges_limit and sub.charges_made is not None and sub.charges_limit - sub.charges_made == 1:
        return sub.next_renewal_at
    return None


def renew_now(sub: SubState, window: Window, now: datetime, p: RuleParams) -> list[Due]:
    """Renew Now on the renewal reminders' days (30/14/7/1, those shorter than the billing
    interval) before the end of a subscription set to end (ends_at). It stops by itself: a
    subscription that renews again is no longer set to end, and gets its renewal reminders
    instead. Those days all fall after the charge before the last, so its count is known."""
    end = ends_at(sub)
    if not (sub.status in RUNNING and end and end > now):
        return []
    end_day = local_day(end, p.tz)
    dues = []
    for d in renewal.offsets(sub, p):
        if end_day - timedelta(days=d) not in window:
            continue
        props = {**sub.properties(), "ends_at": iso(end), "end_date": end_day.isoformat(), "days_before": d}
        dues.append(Due(rule=f"{RENEW_PREFIX}{d}d", occasion=f"{end_day.isoformat()}/{sub.ref}"[:120],
                        name=ev.RENEW_NOW, properties=props,
                        reason=f"ends on {end_day.isoformat()}, {d} day{'s' if d != 1 else ''} ahead",
                        due_at=day_start(end_day - timedelta(days=d), p.tz)))
    return dues
