"""Who is this? Find or create the subscriber an event is about; merges are logged."""
from __future__ import annotations

import logging

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hub.models import (Delivery, InboxEvent, Merge, Order, Payment, Subscriber, Subscription,
                        Trigger)
from hub.values import normalize_email

log = logging.getLogger(__name__)

SOURCE_ID_COLUMNS = {
    "shopify": Subscriber.shopify_customer_id,
    "stripe": Subscriber.stripe_customer_id,
    "chargebee": Subscriber.chargebee_customer_id,
}


def find_subscriber(session: Session, source: str, customer: dict) -> Subscriber | None:
    """The subscriber a customer dict points at, by source id then email; None if unknown."""
    column = SOURCE_ID_COLUMNS[source]
    source_id = customer.get("source_id")
    if source_id:
        found = session.scalar(select(Subscriber).where(column == str(source_id)))
        if found:
            return found
    email = normalize_email(customer.get("email"))
    if email:
        return session.scalar(select(Subscriber).where(Subscriber.email == email))
    return None


def resolve(session: Session, source: str, customer: dict, notes: list[str]) -> Subscriber | None:
    """Find or create the subscriber for `customer`, linking the source id to it.

    A source id, once linked, wins over a changed email: the person keeps their
    record and their new email. When the new email already belongs to another
    record, the two are one person and are merged (the older record is kept).
    """
    column = SOURCE_ID_COLUMNS[source]
    attr = column.key
    source_id = str(customer["source_id"]) if customer.get("source_id") else None
    email = normalize_email(customer.get("email"))
    if not source_id and not email:
        return None

    by_id = session.scalar(select(Subscriber).where(column == source_id)) if source_id else None
    by_email = session.scalar(select(Subscriber).where(Subscriber.email == email)) if email else None

    if by_id and by_email and by_id.id != by_email.id:
        kept, gone = sorted((by_id, by_email), key=lambda s: s.id)
        merge(session, kept, gone, f"{source} customer {source_id} now uses {email}, "
                                   f"the email of subscriber {by_email.id}")
        notes.append(f"merged subscriber {gone.id} into {kept.id}")
        subscriber = kept
    elif by_id:
        subscriber = by_id
    elif by_email:
        subscriber = by_email
        if source_id and getattr(subscriber, attr) is None:
            setattr(subscriber, attr, source_id)
            notes.append(f"linked {source} customer {source_id}")
    else:
        subscriber = Subscriber(email=email)
        if source_id:
            setattr(subscriber, attr, source_id)
        session.add(subscriber)
        session.flush()
        notes.append("new subscriber")
    return subscriber


def merge(session: Session, kept: Subscriber, gone: Subscriber, reason: str) -> None:
    """Fold `gone` into `kept`: its records, source ids and counters move over."""
    for model in (Subscription, Payment, Order):
        session.execute(update(model).where(model.subscriber_id == gone.id).values(subscriber_id=kept.id))
    for model in (InboxEvent, Trigger, Delivery):
        session.execute(update(model).where(model.subscriber_id == gone.id).values(subscriber_id=kept.id))
    moved = {}
    for attr in ("shopify_customer_id", "stripe_customer_id", "chargebee_customer_id",
                 "phone", "first_name", "last_name"):
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
    log.info("merged subscriber %s into %s: %s", gone.id, kept.id, reason)
