"""Compliance: Shopify's mandatory privacy webhooks and GDPR requests.

Erasing a person scrubs every place the hub kept them (subscriber, inbox bodies, triggers,
deliveries and their attempts) and asks every tool that can to delete them too; exporting
gathers what the hub holds about them; an app uninstall stops every call to the shop.
"""
from __future__ import annotations

import hashlib
import re

from sqlalchemy import delete, or_, select, update

from hub.db.dialect import blob_text
from hub.masking import EMAIL_PATTERN, normal_key, scrub_body
from hub.models import (
    CANCELLED,
    QUEUED,
    RETRYING,
    SENT,
    UNINSTALLED,
    Checkpoint,
    CustomerLink,
    Delivery,
    DeliveryAttempt,
    InboxEvent,
    Merge,
    Payment,
    Subscriber,
    Subscription,
    Trigger,
    now_utc,
)
from hub.sync import readmodel
from hub.values import iso

ERASED = "[erased]"
ERASED_BODY = b'{"erased": true}'
DATA_REQUEST_PREFIX = "data_request:"
# Keys of JSON documents (trigger properties, delivery payloads) that name the person.
_PERSON_KEYS = frozenset({"email", "phone", "phonenumber", "firstname", "lastname", "fullname"})


def person_hash(email: str | None) -> str | None:
    """A stable pseudonym of an email (sha256 hex): what a scrubbed delivery keeps."""
    if not email:
        return None

    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def _needles(*values) -> list[str]:
    """Every spelling of the person's identifiers worth searching for, longest first."""
    found = set()
    for value in values:
        if not value or not isinstance(value, str) or len(value.strip()) < 3:
            continue  # a two-letter name would scrub half of every text
        value = value.strip()
        found.update({value, value.lower()})
        digits = re.sub(r"\D", "", value)
        if "@" not in value and len(digits) >= 7 and len(digits) >= len(value) - 6:
            found.update({digits, "+" + digits})  # phone spellings
    return sorted(found, key=len, reverse=True)


def _replace(text, needles: list[str]):
    if not isinstance(text, str) or not text:
        return text
    for needle in needles:
        if needle in text:
            text = text.replace(needle, ERASED)
        elif needle.lower() in text.lower():
            text = re.sub(re.escape(needle), ERASED, text, flags=re.IGNORECASE)
    return text


def scrub_person(value, needles: list[str]):
    """A JSON value with the person's identifiers replaced by `[erased]` (keys kept)."""
    if isinstance(value, dict):
        return {k: (None if normal_key(k) in _PERSON_KEYS and v not in (None, "")
                    else scrub_person(v, needles)) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_person(v, needles) for v in value]
    return _replace(value, needles)


def _now():

    return now_utc()


def _scrub_outcome(outcome, needles: list[str]):
    """An inbox row's outcome scrubbed; profile changes (an old email, a former phone) erased."""
    outcome = scrub_person(outcome or [], needles)
    for entry in outcome if isinstance(outcome, list) else []:
        for change in (entry.get("changed") or []) if isinstance(entry, dict) else []:
            if isinstance(change, dict) and normal_key(change.get("field", "")) in _PERSON_KEYS:
                change.update({"from": ERASED if change.get("from") else change.get("from"),
                               "to": ERASED if change.get("to") else change.get("to")})
    return outcome


def _stub_inbox_rows(session, rows, needles: list[str]) -> int:
    for row in rows:
        row.body = ERASED_BODY
        row.headers = {}
        row.outcome = _scrub_outcome(row.outcome, needles)
        row.error = _replace(row.error, needles)
        row.traceback = _replace(row.traceback, needles)
    return len(rows)


def erase_mentions(session, needles, source: str | None = None, limit: int = 10_000) -> int:
    """Stub inbox rows that belong to no subscriber but whose raw body names the person.

    A LIKE over the stored body (SQLite and PostgreSQL both take it on a blob / bytea),
    bounded to `source`'s rows without a subscriber and to `limit` rows per identifier.
    """

    needles = _needles(*needles)
    wanted = [n for n in needles if "@" in n or len(re.sub(r"\D", "", n)) >= 7]  # emails, phones
    if not wanted:
        return 0
    body = blob_text(session, InboxEvent.body)  # an email, a phone: printable ASCII, as it is
    query = select(InboxEvent).where(InboxEvent.subscriber_id.is_(None), InboxEvent.body != ERASED_BODY,
                                     or_(*[body.like(f"%{n}%") for n in wanted]))
    if source:
        query = query.where(InboxEvent.source == source)
    return _stub_inbox_rows(session, list(session.scalars(query.limit(limit))), needles)


def erase_subscriber(session, subscriber, reason: str, also=(), source: str | None = None) -> dict:
    """Remove the person's personal data from every table; anonymous counts stay.

    Subscriber: email, phone, names, platform customer ids, consent detail, cards and usage
    go; orders_count, lifetime_spend, stage, tier, dates and the subscription, payment and
    order rows (amounts, plans, statuses) stay, so the dashboard's figures do not change.
    Inbox rows of the person: body replaced by {"erased": true}, headers emptied, outcome,
    error and traceback texts scrubbed. Trigger properties, delivery payloads and attempt
    messages: the identifiers replaced by `[erased]`. Queued deliveries of the person are
    cancelled (they would recreate the profile the tools are asked to delete). Stored data
    request exports of the person are deleted. `also`: other spellings to search for
    (the raw email and phone of the redact webhook); `source` bounds the search of
    unlinked inbox rows to that source's rows.

    Returns {"subscriber_id", "email", "phone", "subject", "reason", "counts"}: the email
    and phone are what the caller needs to ask the tools to delete the person; the caller
    must not store them anywhere but the erase deliveries.
    """

    email, phone = subscriber.email, subscriber.phone
    needles = _needles(email, phone, subscriber.first_name, subscriber.last_name,
                       subscriber.name, *also)
    counts = {}
    # Inbox rows of the person, then rows that only mention them (no subscriber linked).
    rows = list(session.scalars(select(InboxEvent).where(InboxEvent.subscriber_id == subscriber.id)))
    counts["inbox"] = _stub_inbox_rows(session, rows, needles)
    session.flush()
    counts["inbox_mentions"] = erase_mentions(session, [email, phone, *also], source=source)
    # Triggers: properties and reason.
    triggers = list(session.scalars(select(Trigger).where(Trigger.subscriber_id == subscriber.id)))
    for t in triggers:
        t.properties = scrub_person(t.properties or {}, needles)
        t.reason = _replace(t.reason, needles)
    counts["triggers"] = len(triggers)
    # Deliveries: open ones cancelled, every payload and attempt message scrubbed.
    deliveries = list(session.scalars(select(Delivery).where(Delivery.subscriber_id == subscriber.id)))
    for d in deliveries:
        if d.status in (QUEUED, RETRYING):
            d.status, d.last_error = CANCELLED, "subscriber erased"
        d.payload = {**scrub_person(d.payload or {}, needles), "subject": person_hash(email)}
        d.last_error = _replace(d.last_error, needles)
    ids = [d.id for d in deliveries]
    for start in range(0, len(ids), 500):
        for a in session.scalars(select(DeliveryAttempt).where(
                DeliveryAttempt.delivery_id.in_(ids[start:start + 500]))):
            a.message = _replace(a.message, needles)
            a.request_id = _replace(a.request_id, needles)
    counts["deliveries"] = len(deliveries)
    # Identity decisions name the emails involved ("… now uses <email> …").
    for m in session.scalars(select(Merge).where(or_(Merge.kept_id == subscriber.id,
                                                      Merge.merged_id == subscriber.id))):
        m.reason = EMAIL_PATTERN.sub(ERASED, _replace(m.reason, needles))
    # Stored exports of the person (data requests) go too.
    for cp in session.scalars(select(Checkpoint).where(Checkpoint.name.like(DATA_REQUEST_PREFIX + "%"))):
        if (cp.value or {}).get("subscriber_id") == subscriber.id:
            session.delete(cp)
    # Links to the person kept on their records.
    for model in (Subscription, Payment):
        session.execute(update(model).where(model.subscriber_id == subscriber.id)
                        .values(update_payment_url=None).execution_options(synchronize_session=False))
    # Hub links in emails already sent name the person's platform customer: they stop working.
    session.execute(delete(CustomerLink).where(CustomerLink.subscriber_id == subscriber.id))
    for p in subscriber.payments:
        p.failure_reason = _replace(p.failure_reason, needles)
    # The subscriber row itself.
    for attr in ("email", "phone", "first_name", "last_name", "shopify_customer_id",
                 "stripe_customer_id", "chargebee_customer_id"):
        setattr(subscriber, attr, None)
    subscriber.consent = {}
    subscriber.cards = {}
    subscriber.usage = []
    subscriber.stage_reason = _replace(subscriber.stage_reason, needles)
    subscriber.erased_at = _now()
    session.flush()
    return {"subscriber_id": subscriber.id, "email": email, "phone": phone,
            "subject": person_hash(email), "reason": reason, "counts": counts}


def erase_shop(session, shop: str | None, reason: str = "shop/redact") -> dict:
    """shop/redact: erase every subscriber that came from Shopify and stub the shop's inbox rows.

    The hub serves one shop, so "came from Shopify" is "has a Shopify customer id" (plus
    anyone linked to an inbox row of that shop). The tools are not asked to delete these
    people: the merchant's marketing tools are the merchant's, not the app's.
    """

    linked = select(InboxEvent.subscriber_id).where(InboxEvent.shop == shop,
                                                     InboxEvent.subscriber_id.is_not(None))
    people = list(session.scalars(select(Subscriber).where(
        Subscriber.erased_at.is_(None),
        or_(Subscriber.shopify_customer_id.is_not(None), Subscriber.id.in_(linked)))))
    erased = [erase_subscriber(session, s, reason)["subscriber_id"] for s in people]
    rows = list(session.scalars(select(InboxEvent).where(InboxEvent.shop == shop,
                                                          InboxEvent.body != ERASED_BODY)))
    stubbed = _stub_inbox_rows(session, rows, [])
    session.flush()
    return {"shop": shop, "subscribers": erased, "inbox_rows": stubbed}


def export_subscriber(session, subscriber) -> dict:
    """Everything the hub holds on one person: state, records, timeline, triggers,
    deliveries and the raw webhooks (secrets and card data removed), JSON-ready."""

    sid = subscriber.id
    inbound = [{"id": r.id, "source": r.source, "topic": r.topic, "event_id": r.event_id,
                "received_at": iso(r.received_at), "body": scrub_body(r.body)}
               for r in session.scalars(select(InboxEvent).where(InboxEvent.subscriber_id == sid)
                                        .order_by(InboxEvent.id))]
    triggers = [{"id": t.id, "name": t.name, "rule": t.rule, "occasion": t.occasion,
                 "status": t.status, "due_at": iso(t.due_at), "properties": t.properties,
                 "created_at": iso(t.created_at)}
                for t in session.scalars(select(Trigger).where(Trigger.subscriber_id == sid)
                                         .order_by(Trigger.id))]
    deliveries = [{"id": d.id, "connector": d.connector, "kind": d.kind, "status": d.status,
                   "payload": d.payload, "created_at": iso(d.created_at), "sent_at": iso(d.sent_at)}
                  for d in session.scalars(select(Delivery).where(Delivery.subscriber_id == sid)
                                           .order_by(Delivery.id))]
    return {"exported_at": iso(_now()), "subscriber_id": sid,
            "state": readmodel.state(subscriber), "usage": subscriber.usage or [],
            "timeline": readmodel.timeline(session, sid, limit=10_000), "inbound": inbound,
            "triggers": triggers, "deliveries": deliveries}


def store_data_request(session, request_id: str, subscriber, customer: dict | None = None,
                       source: str = "shopify") -> dict:
    """Keep the export of a data request as Checkpoint `data_request:<id>` for staff."""

    export = export_subscriber(session, subscriber) if subscriber is not None else None
    value = {"request_id": str(request_id), "source": source, "received_at": _now().isoformat(),
             "subscriber_id": subscriber.id if subscriber is not None else None,
             "found": subscriber is not None,
             "customer_source_id": (customer or {}).get("source_id"),
             "export": export}
    name = f"{DATA_REQUEST_PREFIX}{request_id}"[:100]
    held = session.get(Checkpoint, name)
    if held is None:
        session.add(Checkpoint(name=name, value=value))
    else:
        held.value = value
    session.flush()
    return value


def data_request(session, request_id: str) -> dict | None:
    """A stored data request export by its id (Shopify's `data_request.id`), or None."""

    held = session.get(Checkpoint, f"{DATA_REQUEST_PREFIX}{request_id}"[:100])
    return held.value if held is not None else None


def data_requests(session) -> list[dict]:
    """Stored data requests, newest first: id, when, whom (no personal data)."""

    rows = session.scalars(select(Checkpoint).where(Checkpoint.name.like(DATA_REQUEST_PREFIX + "%")))
    listed = [{"request_id": c.value.get("request_id"), "received_at": c.value.get("received_at"),
               "subscriber_id": c.value.get("subscriber_id"), "found": c.value.get("found")}
              for c in rows]
    return sorted(listed, key=lambda r: r["received_at"] or "", reverse=True)


def record_uninstalled(session, shop: str | None) -> None:
    """app/uninstalled: remember it; Shopify calls and registration stop, data stays."""

    value = {"shop": shop, "at": _now().isoformat()}
    held = session.get(Checkpoint, UNINSTALLED)
    if held is None:
        session.add(Checkpoint(name=UNINSTALLED, value=value))
    else:
        held.value = value
    session.flush()


def shopify_uninstalled(session) -> bool:
    """True after app/uninstalled until `clear_uninstalled` (a new `hub install`)."""

    return session.get(Checkpoint, UNINSTALLED) is not None


def clear_uninstalled(session) -> None:
    """Forget an app/uninstalled (call when the app is installed again)."""

    held = session.get(Checkpoint, UNINSTALLED)
    if held is not None:
        session.delete(held)
        session.flush()


def forget_sent_erasures(session, delivery_ids) -> int:
    """Blank the identity of erase deliveries the tools accepted, and their attempt texts."""

    ids = list(delivery_ids)
    if not ids:
        return 0
    done = 0
    for d in session.scalars(select(Delivery).where(Delivery.id.in_(ids), Delivery.kind == "erase",
                                                    Delivery.status == SENT)):
        needles = _needles(d.payload.get("email"), d.payload.get("phone"))
        d.payload = {"subscriber_id": d.payload.get("subscriber_id"), "email": None, "phone": None,
                     "subject": d.payload.get("subject")}
        d.last_error = _replace(d.last_error, needles)
        for a in session.scalars(select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == d.id)):
            a.message = _replace(a.message, needles)
        done += 1
    return done


__all__ = ["ERASED", "person_hash", "scrub_person", "erase_subscriber", "erase_mentions",
           "erase_shop", "export_subscriber", "store_data_request", "data_request",
           "data_requests", "record_uninstalled", "shopify_uninstalled", "clear_uninstalled",
           "forget_sent_erasures"]
