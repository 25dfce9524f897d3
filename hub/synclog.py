"""Read side of the sync log: find a subscriber, their state and their timeline."""
from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from hub.models import Delivery, InboxEvent, Subscriber, Trigger
from hub.values import iso, normalize_email


def find(session: Session, key: str) -> Subscriber | None:
    """A subscriber by hub id, email or any platform customer id."""
    key = key.strip()
    if key.isdigit():
        found = session.get(Subscriber, int(key))
        if found:
            return found
    email = normalize_email(key)
    if email:
        return session.scalar(select(Subscriber).where(Subscriber.email == email))
    return session.scalar(select(Subscriber).where(or_(
        Subscriber.shopify_customer_id == key, Subscriber.stripe_customer_id == key,
        Subscriber.chargebee_customer_id == key)))


def state(subscriber: Subscriber) -> dict:
    """Current state of a subscriber, JSON-ready."""
    s = subscriber
    return {
        "id": s.id, "email": s.email, "phone": s.phone, "first_name": s.first_name,
        "last_name": s.last_name, "shopify_customer_id": s.shopify_customer_id,
        "stripe_customer_id": s.stripe_customer_id, "chargebee_customer_id": s.chargebee_customer_id,
        "consent": s.consent, "first_seen_at": iso(s.first_seen_at), "first_order_at": iso(s.first_order_at),
        "last_order_at": iso(s.last_order_at), "orders_count": s.orders_count,
        "lifetime_spend": {"amount": s.lifetime_spend, "currency": s.currency},
        "last_activity_at": iso(s.last_activity_at), "loyalty_points": s.loyalty_points, "tier": s.tier,
        "stage": s.stage, "stage_reason": s.stage_reason, "health_score": s.health_score,
        "cards": s.cards, "erased_at": iso(s.erased_at),
        "subscriptions": [{
            "source": x.source, "source_id": x.source_id, "status": x.status, "plan": x.plan,
            "interval": x.interval, "interval_count": x.interval_count, "amount": x.amount,
            "currency": x.currency, "quantity": x.quantity,
            "current_period_start": iso(x.current_period_start),
            "current_period_end": iso(x.current_period_end), "next_renewal_at": iso(x.next_renewal_at),
            "trial_end": iso(x.trial_end), "cancel_at_period_end": x.cancel_at_period_end,
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


def timeline(session: Session, subscriber_id: int, limit: int = 200) -> list[dict]:
    """Inbound events, triggers and deliveries of one subscriber, newest first."""
    items = []
    for row in session.scalars(select(InboxEvent).where(InboxEvent.subscriber_id == subscriber_id)
                               .order_by(InboxEvent.id.desc()).limit(limit)):
        items.append({"kind": "event", "at": iso(row.received_at), "id": row.id, "source": row.source,
                      "topic": row.topic, "event_id": row.event_id, "status": row.status,
                      "error": row.error, "origin": row.origin, "changes": row.outcome})
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
    items.sort(key=lambda i: (i["at"] or "", i["id"]), reverse=True)
    return items[:limit]
