"""Privacy: what staff pages and logs may show of a person, and what a raw body must never show.

Masking is for lists (many people on one screen, read over a shoulder); the subscriber
page shows the person's own details whole. Raw webhook bodies are shown on demand with
secrets and card data removed: they are UNTRUSTED input that may carry tokens, card
numbers or signatures, and a support page is not a place to keep those.
"""
from __future__ import annotations

import json
import logging
import re

REMOVED = "[removed]"

# Keys whose values are removed wherever they appear (compared lower-case, without
# "_", "-" or spaces): credentials, signatures and card data.
_SECRET_KEYS = frozenset({
    "password", "passwd", "pass", "secret", "clientsecret", "apikey", "apisecret", "secretkey",
    "privatekey", "accesstoken", "refreshtoken", "idtoken", "token", "authorization", "auth",
    "cookie", "setcookie", "signature", "hmac", "xshopifyhmacsha256", "stripesignature",
    "cardnumber", "pan", "cvc", "cvv", "cvc2", "cvv2", "securitycode", "exp", "expiry",
    "expmonth", "expyear", "expirymonth", "expiryyear", "expirationdate", "expdate",
    "accountnumber", "routingnumber", "iban", "ssn", "taxid",
})
# Key endings that mark a credential whatever comes before (`webhook_secret`, `cart_token`).
_SECRET_SUFFIXES = ("password", "secret", "token", "apikey", "signature", "cardnumber", "cvc", "cvv")
# Inside an object that describes a card, `number` is the card number.
_CARD_KEYS = frozenset({"card", "paymentmethod", "source", "creditcard", "paymentsource"})

# 13 to 19 digits, optionally grouped by spaces or dashes: a possible card number (checked with Luhn).
_CARD_LIKE = re.compile(r"(?<![\w.])(?:\d[ -]?){12,18}\d(?![\w.])")
_EMAIL = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<![\w])\+\d[\d ().-]{6,18}\d(?![\w])")
# A customer link's token opens that customer's billing page (hub.web.links): an access log
# line quoting the path must not hand it to whoever reads the logs.
_LINK_TOKEN = re.compile(r"(?<=/l/)[A-Za-z0-9_-]{16,}")
_KEY_VALUE = re.compile(r"(?i)\b(password|secret|token|api[_-]?key|authorization|signature|cvc|cvv)"
                        r"(\s*[=:]\s*)([^\s&,;]+)")


def mask_email(email: str | None) -> str:
    """`jenny.rosen@example.com` → `j***@example.com`: enough to tell people apart in a list."""
    if not email:
        return ""
    local, at, domain = email.partition("@")
    if not at:
        return local[:1] + "***"
    return f"{local[:1]}***@{domain}"


def mask_phone(phone: str | None) -> str:
    """`+15551234567` → `+*******4567`: only the last four digits stay."""
    if not phone:
        return ""
    digits = re.sub(r"\D", "", phone)
    if len(digits) <= 4:
        return "*" * len(digits)
    return ("+" if phone.strip().startswith("+") else "") + "*" * (len(digits) - 4) + digits[-4:]


def mask_text(text: str | None) -> str | None:
    """Free text (a tool's error message, a log line) with every email and phone number in it
    masked, and the token of every customer link."""
    if not text:
        return text
    text = _EMAIL.sub(lambda m: mask_email(m.group(0)), text)
    text = _LINK_TOKEN.sub("[token]", text)
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)


class MaskPersonalData(logging.Filter):
    """A log handler's filter: every email and phone number in a record's message (arguments
    included) and traceback is masked before a formatter writes it. Logs are copied to files
    and log services the hub cannot erase from, so they must not name anyone, whichever
    module or library wrote the line (an identity merge, a database error quoting its
    parameters, a tool's error text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True


_TRACEBACKS = logging.Formatter()


def mask_logs() -> None:
    """Put MaskPersonalData on every log handler configured so far (the root logger's and
    those of loggers that do not propagate to it); run once logging is set up."""
    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, MaskPersonalData) for f in handler.filters):
                handler.addFilter(MaskPersonalData())


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum that every payment card number passes."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _card_number(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    return 13 <= len(digits) <= 19 and digits.isdigit() and luhn_valid(digits)


def _normal(key) -> str:
    return re.sub(r"[\s_-]", "", str(key)).lower()


def secret_key(key) -> bool:
    """True when a field of this name holds a credential or card data."""
    k = _normal(key)
    return k in _SECRET_KEYS or k.endswith(_SECRET_SUFFIXES)


def _scrub_text(text: str) -> str:
    text = _CARD_LIKE.sub(lambda m: REMOVED if _card_number(m.group(0)) else m.group(0), text)
    return _KEY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REMOVED}", text)


def scrub_value(value, key=None, in_card: bool = False):
    """A JSON value with secrets and card data replaced by `[removed]`."""
    if key is not None and (secret_key(key) or (in_card and _normal(key) == "number")):
        return REMOVED if value not in (None, "") else value
    if isinstance(value, dict):
        card = in_card or _normal(key or "") in _CARD_KEYS or value.get("object") == "card"
        return {k: scrub_value(v, k, card) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_value(v, None, in_card) for v in value]
    if isinstance(value, str):
        # Ids are not card numbers even when their digits pass Luhn (Shopify ids are long numbers).
        if key is not None and _normal(key).endswith("id"):
            return value
        return _scrub_text(value)
    return value


def scrub_body(body: bytes | str | None) -> str:
    """A raw webhook body as readable text (JSON pretty-printed) without secrets or card data."""
    if body is None:
        return ""
    if isinstance(body, (bytes, bytearray, memoryview)):
        text = bytes(body).decode("utf-8", errors="replace")
    else:
        text = body
    try:
        return json.dumps(scrub_value(json.loads(text)), indent=2, ensure_ascii=False, sort_keys=False)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than it can be walked
        return _scrub_text(text)


def scrub_headers(headers: dict | None) -> dict:
    """Stored request headers without signatures or credentials."""
    return {k: (REMOVED if secret_key(k) or "signature" in k.lower() or "hmac" in k.lower() else v)
            for k, v in (headers or {}).items()}


# ---------------------------------------------------------------------------------------
# Compliance (Shopify's mandatory webhooks, issue 6 item 4): erase, export, uninstall.
# Added below the masking helpers above; those are untouched.
# ---------------------------------------------------------------------------------------

ERASED = "[erased]"
ERASED_BODY = b'{"erased": true}'
UNINSTALLED = "shopify:uninstalled"
DATA_REQUEST_PREFIX = "data_request:"
# Keys of JSON documents (trigger properties, delivery payloads) that name the person.
_PERSON_KEYS = frozenset({"email", "phone", "phonenumber", "firstname", "lastname", "fullname"})


def person_hash(email: str | None) -> str | None:
    """A stable pseudonym of an email (sha256 hex): what a scrubbed delivery keeps."""
    if not email:
        return None
    import hashlib

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
        return {k: (None if _normal(k) in _PERSON_KEYS and v not in (None, "")
                    else scrub_person(v, needles)) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_person(v, needles) for v in value]
    return _replace(value, needles)


def _now():
    from hub.models import now_utc

    return now_utc()


def _scrub_outcome(outcome, needles: list[str]):
    """An inbox row's outcome scrubbed; profile changes (an old email, a former phone) erased."""
    outcome = scrub_person(outcome or [], needles)
    for entry in outcome if isinstance(outcome, list) else []:
        for change in (entry.get("changed") or []) if isinstance(entry, dict) else []:
            if isinstance(change, dict) and _normal(change.get("field", "")) in _PERSON_KEYS:
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
    from sqlalchemy import Text, cast, func, or_, select

    from hub.models import InboxEvent

    needles = _needles(*needles)
    wanted = [n for n in needles if "@" in n or len(re.sub(r"\D", "", n)) >= 7]  # emails, phones
    if not wanted:
        return 0
    # The body as text: SQLite's LIKE does not match inside a BLOB, PostgreSQL's bytea has no
    # LIKE; encode(…, 'escape') keeps printable ASCII (an email, a phone) as it is.
    if session.bind.dialect.name == "postgresql":
        body = func.encode(InboxEvent.body, "escape")
    else:
        body = cast(InboxEvent.body, Text)
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
    from sqlalchemy import delete, or_, select, update

    from hub.models import (
        CANCELLED,
        QUEUED,
        RETRYING,
        Checkpoint,
        CustomerLink,
        Delivery,
        DeliveryAttempt,
        InboxEvent,
        Merge,
        Payment,
        Subscription,
        Trigger,
    )

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
        m.reason = _EMAIL.sub(ERASED, _replace(m.reason, needles))
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
    from sqlalchemy import or_, select

    from hub.models import InboxEvent, Subscriber

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
    from sqlalchemy import select

    from hub import synclog
    from hub.models import Delivery, InboxEvent, Trigger
    from hub.values import iso

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
            "state": synclog.state(subscriber), "usage": subscriber.usage or [],
            "timeline": synclog.timeline(session, sid, limit=10_000), "inbound": inbound,
            "triggers": triggers, "deliveries": deliveries}


def store_data_request(session, request_id: str, subscriber, customer: dict | None = None,
                       source: str = "shopify") -> dict:
    """Keep the export of a data request as Checkpoint `data_request:<id>` for staff."""
    from hub.models import Checkpoint

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
    from hub.models import Checkpoint

    held = session.get(Checkpoint, f"{DATA_REQUEST_PREFIX}{request_id}"[:100])
    return held.value if held is not None else None


def data_requests(session) -> list[dict]:
    """Stored data requests, newest first: id, when, whom (no personal data)."""
    from sqlalchemy import select

    from hub.models import Checkpoint

    rows = session.scalars(select(Checkpoint).where(Checkpoint.name.like(DATA_REQUEST_PREFIX + "%")))
    listed = [{"request_id": c.value.get("request_id"), "received_at": c.value.get("received_at"),
               "subscriber_id": c.value.get("subscriber_id"), "found": c.value.get("found")}
              for c in rows]
    return sorted(listed, key=lambda r: r["received_at"] or "", reverse=True)


def record_uninstalled(session, shop: str | None) -> None:
    """app/uninstalled: remember it; Shopify calls and registration stop, data stays."""
    from hub.models import Checkpoint

    value = {"shop": shop, "at": _now().isoformat()}
    held = session.get(Checkpoint, UNINSTALLED)
    if held is None:
        session.add(Checkpoint(name=UNINSTALLED, value=value))
    else:
        held.value = value
    session.flush()


def shopify_uninstalled(session) -> bool:
    """True after app/uninstalled until `clear_uninstalled` (a new `hub install`)."""
    from hub.models import Checkpoint

    return session.get(Checkpoint, UNINSTALLED) is not None


def clear_uninstalled(session) -> None:
    """Forget an app/uninstalled (call when the app is installed again)."""
    from hub.models import Checkpoint

    held = session.get(Checkpoint, UNINSTALLED)
    if held is not None:
        session.delete(held)
        session.flush()


def erase_targets(settings) -> list[str]:
    """Enabled connectors that can delete a person (kind "erase"), whatever their mapping's
    `send` says: deleting a person on request is not a sync preference."""
    import connectors
    from hub import outbox

    return [n for n in outbox.enabled_connectors(settings)
            if "erase" in getattr(connectors.CONNECTORS[n], "kinds", ())]


def plan_erasures(session, settings, erased: list[dict]) -> int:
    """One "erase" delivery per erased person per tool that can delete them.

    The payload holds the email and phone the tool's deletion call needs and a hash
    (`subject`); once the tool accepted the request, `forget_sent_erasures` blanks the
    email and phone, so only the hash stays (proof that the request went out).
    A delivery that ends dead keeps them, so staff can retry it: it is listed on the
    sync log's failing deliveries until it is sent.
    """
    from hub import outbox

    rows = []
    for name in erase_targets(settings):
        for person in erased:
            if not person.get("email") and not person.get("phone"):
                continue
            payload = {"subscriber_id": person["subscriber_id"], "email": person.get("email"),
                       "phone": person.get("phone"), "subject": person.get("subject")}
            key = f"erase:{person['subscriber_id']}"
            rows.append(outbox._row(name, "erase", person["subscriber_id"], key, payload, False))
    return outbox._insert(session, rows)


def forget_sent_erasures(session, delivery_ids) -> int:
    """Blank the identity of erase deliveries the tools accepted, and their attempt texts."""
    from sqlalchemy import select

    from hub.models import SENT, Delivery, DeliveryAttempt

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


__all__ = ["REMOVED", "MaskPersonalData", "mask_email", "mask_logs", "mask_phone", "mask_text",
           "scrub_body", "scrub_value",
           "scrub_headers", "secret_key", "luhn_valid",
           # compliance
           "ERASED", "person_hash", "scrub_person", "erase_subscriber", "erase_mentions",
           "erase_shop", "export_subscriber", "store_data_request", "data_request",
           "data_requests", "record_uninstalled", "shopify_uninstalled", "clear_uninstalled",
           "erase_targets", "plan_erasures", "forget_sent_erasures"]
