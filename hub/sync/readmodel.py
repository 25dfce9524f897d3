"""The read model: a subscriber's state and timeline as the JSON API and exports show them."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.events import INFERRED_SOURCE, subscription_source
from hub.models import PROCESSED, RECONCILIATION, Delivery, InboxEvent, Subscriber, Trigger
from hub.models.link import LinkClick
from hub.sync import rules
from hub.sync.rules import lifecycle, queries
from hub.values import iso

# Marks the outcome entries of an earlier processing attempt (its number, from 1), and each
# such attempt's own line: {EARLIER: n, "attempt": {"at", "status", "error"}}. Entries
# without it are the latest attempt's, so every reader of `outcome` sees the latest one.
EARLIER = "earlier_attempt"


def attempts_of(row: InboxEvent) -> list[dict]:
    """Every processing attempt of a row, oldest first: {number, at, status, error, entries,
    latest, by_itself}; the latest is read from the row's own columns, with `retry_at` when
    it waits for its platform. `by_itself`: the hub tried again on its own (the attempt before
    got no answer from the platform), not a replay staff asked for."""
    attempts: dict[int, dict] = {}
    for entry in row.outcome or []:
        number = entry.get(EARLIER)
        if number is None:
            continue
        attempt = attempts.setdefault(number, {"number": number, "entries": [], "latest": False})
        if "attempt" in entry:
            attempt.update(entry["attempt"])
        else:
            attempt["entries"].append(entry)
    ordered = [*(attempts[n] for n in sorted(attempts)), {
        "number": len(attempts) + 1, "at": row.processed_at.isoformat() if row.processed_at else None,
        "status": row.status, "error": row.error, "latest": True, "retry_at": row.retry_at,
        "entries": [entry for entry in row.outcome or [] if EARLIER not in entry]}]
    for before, attempt in zip(ordered, ordered[1:]):
        attempt["by_itself"] = before.get("next") == "retry"
    return ordered


def recovered(origin: str | None, status: str | None, outcome) -> bool:
    """Whether an inbox row is a change the webhooks missed and reconciliation applied."""
    if origin != RECONCILIATION or status != PROCESSED:
        return False
    return any(not entry.get("stale") and entry.get("changed") for entry in outcome or [])


def state(subscriber: Subscriber, params=None) -> dict:
    """Current state of a subscriber, JSON-ready (the stage's reason judged by `params`,
    the rules of the hub's settings)."""
    s = subscriber
    return {
        "id": s.id, "email": s.email, "phone": s.phone, "first_name": s.first_name,
        "last_name": s.last_name, "shopify_customer_id": s.shopify_customer_id,
        "stripe_customer_id": s.stripe_customer_id, "chargebee_customer_id": s.chargebee_customer_id,
        "recharge_customer_id": s.recharge_customer_id,
        "consent": s.consent, "first_seen_at": iso(s.first_seen_at), "first_order_at": iso(s.first_order_at),
        "last_order_at": iso(s.last_order_at), "orders_count": s.orders_count,
        "lifetime_spend": {"amount": s.lifetime_spend, "currency": s.currency},
        "last_activity_at": iso(s.last_activity_at), "loyalty_points": s.loyalty_points, "tier": s.tier,
        "stage": s.stage, "stage_reason": stage_reason(s, params), "health_score": s.health_score,
        "cards": s.cards, "erased_at": iso(s.erased_at),
        "subscriptions": [{
            "source": x.source, "source_id": x.source_id, "status": x.status, "plan": x.plan,
            "subscription_source": subscription_source(x.source),
            # Inferred from selling-plan orders: the next renewal is last order + cadence, not a billing date.
            "next_renewal_estimated": x.source == INFERRED_SOURCE,
            "interval": x.interval, "interval_count": x.interval_count, "amount": x.amount,
            "currency": x.currency, "quantity": x.quantity,
            "current_period_start": iso(x.current_period_start),
            "current_period_end": iso(x.current_period_end), "next_renewal_at": iso(x.next_renewal_at),
            "resumes_at": iso(x.resumes_at), "trial_end": iso(x.trial_end),
            "cancel_at_period_end": x.cancel_at_period_end,
            "canceled_at": iso(x.canceled_at), "source_updated_at": iso(x.source_updated_at),
        } for x in s.subscriptions],
        "payments": [{
            "source": p.source, "source_id": p.source_id, "status": p.status, "amount": p.amount,
            "currency": p.currency, "attempt_count": p.attempt_count, "next_retry_at": iso(p.next_retry_at),
            "failure_reason": p.failure_reason, "decline_code": p.decline_code,
            "hard_decline": p.hard_decline, "first_failed_at": iso(p.first_failed_at),
            "paid_at": iso(p.paid_at), "update_payment_url": p.update_payment_url,
        } for p in s.payments],
        "orders": [{
            "source": o.source, "source_id": o.source_id, "number": o.number, "total": o.total,
            "refunded": o.refunded, "currency": o.currency, "paid": o.paid, "cancelled": o.cancelled,
            "is_subscription": o.is_subscription, "placed_at": iso(o.placed_at),
        } for o in s.orders],
    }


def stage_reason(subscriber: Subscriber, params=None, now: datetime | None = None) -> str | None:
    """The reason for the subscriber's stage as of now ("first order 10 days ago"), not the
    words stored when the stage was last assessed; those when the stage's rules no longer
    hold (the next sweep moves the stage)."""
    if not subscriber.stage or subscriber.erased_at is not None:
        return subscriber.stage_reason
    state_now = queries.subscriber_state(subscriber)
    return lifecycle.reason_for(state_now, subscriber.stage, now or datetime.now(timezone.utc),
                                params or rules.current_params()) or subscriber.stage_reason


def timeline(session: Session, subscriber_id: int, limit: int = 200) -> list[dict]:
    """Inbound events, triggers, deliveries and link clicks of one subscriber, newest first."""
    items = []
    for row in session.scalars(select(InboxEvent).where(InboxEvent.subscriber_id == subscriber_id)
                               .order_by(InboxEvent.id.desc()).limit(limit)):
        tries = attempts_of(row)
        items.append({"kind": "event", "at": iso(row.received_at), "id": row.id, "source": row.source,
                      "topic": row.topic, "event_id": row.event_id, "status": row.status,
                      "error": row.error, "origin": row.origin, "changes": tries[-1]["entries"],
                      "earlier_attempts": tries[:-1],
                      "recovered": recovered(row.origin, row.status, tries[-1]["entries"])})
    for t in session.scalars(select(Trigger).where(Trigger.subscriber_id == subscriber_id)
                             .order_by(Trigger.id.desc()).limit(limit)):
        items.append({"kind": "trigger", "at": iso(t.created_at), "id": t.id, "name": t.name,
                      "rule": t.rule, "occasion": t.occasion, "status": t.status, "reason": t.reason,
                      "due_at": iso(t.due_at), "properties": t.properties})
    for d in session.scalars(select(Delivery).where(Delivery.subscriber_id == subscriber_id)
                             .order_by(Delivery.id.desc()).limit(limit)):
        items.append({"kind": "delivery", "at": iso(d.created_at), "id": d.id, "connector": d.connector,
                      "delivery_kind": d.kind, "status": d.status, "attempts": [
                          {"at": iso(a.at), "outcome": a.outcome, "http_status": a.http_status,
                           "latency_ms": a.latency_ms, "request_id": a.request_id,
                           "retry_after": a.retry_after, "message": a.message} for a in d.attempts_log]})
    items += [{"kind": "link", "at": iso(c.clicked_at), "id": c.id, "purpose": c.purpose, "source": c.source,
               "outcome": c.outcome, "description": c.description}
              for c in session.scalars(LinkClick.latest(subscriber_id, limit))]
    items.sort(key=lambda i: (i["at"] or "", i["id"]), reverse=True)
    return items[:limit]
