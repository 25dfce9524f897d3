"""Recharge webhooks (API 2021-11): signature check, envelope, normalizers (design §4).

A webhook body is the REST object wrapped in its resource key, `{"subscription": {…}}`,
identical to what GET /subscriptions/<id> answers
(https://docs.getrecharge.com/docs/webhooks-overview#handling-the-callback-request).
Prices are decimal strings in the object's currency; times are ISO-8601, some with an offset
(`2022-03-10T12:13:28+00:00`) and some without (customers' `2022-03-09T02:36:35`), read as UTC.
Charge dates are calendar days (`2022-04-09`), read as the moment Recharge starts charging
them (`charge_day`).
A charge is one billing cycle: its retries keep the charge id and count in `charge_attempts`,
so every charge topic updates one payment keyed by the charge id
(https://docs.rechargepayments.com/docs/charges).
"""
from __future__ import annotations

import hashlib
import hmac
import time
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

from hub import events as ev
from hub.errors import MalformedPayload, SignatureInvalid, SourceNotConfigured
from hub.events import CanonicalEvent
from hub.values import Money, json_value, normalize_email, normalize_phone, readable_utc, utc
from webhooks.envelope import UNREADABLE, Envelope, body_hash_id, header, text_or_none

NAME = "recharge"
# What verify() needs: without it every webhook is refused (named at `hub run`'s start).
SECRET_SETTINGS = ("RECHARGE_WEBHOOK_SECRET",)

# Recharge rejects nothing older itself; its docs ask receivers to refuse a timestamp-bound
# signature more than 48 hours from now, the span of its own retries (20 attempts over 48 h,
# https://docs.getrecharge.com/docs/webhooks-overview#validating-webhooks,
# https://changelog.getrecharge.com/webhook-signatures-now-support-timestamp-verification-4jEmOs).
TOLERANCE_SECONDS = 48 * 3600

# The resource keys a body is wrapped in, by the first part of the topic.
RESOURCES = ("customer", "subscription", "charge", "order")

# Recharge reckons its days in Eastern Time: it starts charging a day's queued charges after
# midnight ET (https://support.rechargepayments.com/hc/en-us/articles/360026324314-Time-zones-FAQ),
# and a charge's own retry_date says so in full (`2022-04-12T04:00:00+00:00`).
PROCESSING_ZONE = ZoneInfo("America/New_York")


def charge_day(value) -> datetime | None:
    """A charge date (`2022-04-09`) as the moment Recharge starts charging it: midnight ET, not
    UTC, which is the evening before in the Americas. A full timestamp is read as it is."""
    if isinstance(value, str) and len(value.strip()) == 10:
        try:
            day = date.fromisoformat(value.strip())
        except ValueError:
            return utc(value)  # its own clear error
        return datetime.combine(day, datetime.min.time(), PROCESSING_ZONE).astimezone(timezone.utc)
    return utc(value)


# --- authenticity and envelope ------------------------------------------------------------

def verify(settings, headers, body: bytes) -> None:
    """Raise SignatureInvalid unless `body` is signed with RECHARGE_WEBHOOK_SECRET.

    Recharge sends two signatures with every webhook, both keyed by the API client secret
    (https://docs.getrecharge.com/docs/webhooks-overview#validating-webhooks):
    - `X-Recharge-Webhook-Signature: t=<epoch>,v1=<hex>`, HMAC-SHA256 of `"<t>.<raw body>"`,
      bound to its time (a captured request cannot be replayed after 48 hours);
    - the legacy `X-Recharge-Hmac-Sha256`: hex SHA-256 (a plain hash, not an HMAC) of the
      client secret followed by the raw body, still sent and supported.
    The timestamped one decides when present, so a request whose timestamped signature fails
    is refused even if its legacy one matches; the legacy one alone is accepted for senders
    that do not add the other yet (a replayed legacy request is the same body, and the inbox
    drops it as a duplicate).
    """
    secret = settings.RECHARGE_WEBHOOK_SECRET or ""
    if not secret:
        # Without the secret anyone could post events: refuse rather than accept all.
        raise SourceNotConfigured("recharge webhooks are not configured (set RECHARGE_WEBHOOK_SECRET)")
    signature = header(headers, "X-Recharge-Webhook-Signature")
    if signature:
        _verify_timestamped(secret, signature, body)
        return
    legacy = header(headers, "X-Recharge-Hmac-Sha256")
    if not legacy:
        raise SignatureInvalid("missing X-Recharge-Webhook-Signature and X-Recharge-Hmac-Sha256 headers")
    expected = hashlib.sha256(secret.encode() + body).hexdigest()
    if not hmac.compare_digest(expected.encode(), legacy.strip().lower().encode("utf-8", "replace")):
        raise SignatureInvalid("X-Recharge-Hmac-Sha256 does not match the body")


def _verify_timestamped(secret: str, signature: str, body: bytes) -> None:
    # Pairs are read by key: Recharge says later schemes may add `v2=…` beside `v1`.
    parts = dict(item.strip().partition("=")[::2] for item in signature.split(","))
    stamp, given = parts.get("t", ""), parts.get("v1", "")
    if not (stamp.isascii() and stamp.isdigit()) or not given:
        raise SignatureInvalid("malformed X-Recharge-Webhook-Signature")
    if abs(time.time() - int(stamp)) > TOLERANCE_SECONDS:
        raise SignatureInvalid("X-Recharge-Webhook-Signature is outside the 48-hour tolerance")
    expected = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), given.lower().encode("utf-8", "replace")):
        raise SignatureInvalid("X-Recharge-Webhook-Signature does not match the body")


def describe(headers, body: bytes) -> Envelope:
    """Dedupe id, topic and time; never raises.

    The topic comes from `X-Recharge-Topic`, sent with every delivery ("Recharge sends the
    subscription topic in the X-Recharge-Topic header", https://github.com/hookdeck/webhook-skills/
    blob/main/skills/recharge-webhooks/SKILL.md). The body cannot stand in for it: a callback is the
    bare REST object (https://docs.getrecharge.com/docs/webhooks-overview#handling-the-callback-request),
    so customer/updated and customer/deleted carry the same customer. A delivery without the
    header is kept as unreadable and fails when drained, rather than applied as a guessed topic.
    Recharge's webhooks carry no event id, and a retry resends the same object: the id is the
    topic with the object's id and updated_at (else the body's hash), the same across retries of
    one delivery and new for every change.
    """
    try:
        payload = json_value(body)
        key, obj = _resource(payload)
        object_id = obj.get("id")
        if isinstance(object_id, bool) or not isinstance(object_id, (int, str)) or object_id == "":
            raise ValueError("no object id")
    except Exception:  # the contract: never raise here; the worker fails the body later
        return Envelope(event_id=body_hash_id(body), topic=UNREADABLE)
    topic = (text_or_none(header(headers, "X-Recharge-Topic")) or "").strip()
    if not topic:
        return Envelope(event_id=body_hash_id(body), topic=UNREADABLE)
    # Without a readable updated_at the body itself tells one state from another.
    version = text_or_none(obj.get("updated_at")) or body_hash_id(body)
    return Envelope(event_id=f"{topic}:{object_id}:{version}", topic=topic,
                    triggered_at=(readable_utc(header(headers, "X-Recharge-Webhook-Timestamp"))
                                  or readable_utc(obj.get("updated_at"))),
                    extra={"resource": key})


def _resource(payload) -> tuple[str, dict]:
    """(resource key, object) of a body: the one known key whose value is an object."""
    if not isinstance(payload, dict):
        raise ValueError("not a Recharge body")
    for key in RESOURCES:
        if isinstance(payload.get(key), dict):
            return key, payload[key]
    raise ValueError("no Recharge resource in the body")


# --- readers of Recharge objects ----------------------------------------------------------

def _object(payload: dict, key: str) -> dict:
    obj = payload.get(key) if isinstance(payload, dict) else None
    if not isinstance(obj, dict) or obj.get("id") is None:
        raise MalformedPayload(f"Recharge body carries no {key}")
    return obj


def _id(value) -> str | None:
    return None if value is None or value == "" else str(value)


def _ecommerce(ref) -> str | None:
    """The store platform's id inside Recharge's `external_*_id: {"ecommerce": …}` objects."""
    return _id(ref.get("ecommerce")) if isinstance(ref, dict) else _id(ref)


def _currency(obj: dict) -> str | None:
    # Subscriptions name theirs in presentment_currency (null: the store's own, which the
    # object does not say); charges and orders in currency.
    found = obj.get("currency") or obj.get("presentment_currency")
    return str(found).upper() if found else None


def _minor(amount, currency: str | None) -> int | None:
    if amount in (None, "") or not currency:
        return None
    return Money.from_decimal(amount, currency).amount


def _money(amount, currency: str | None, key: str = "amount") -> dict:
    minor = _minor(amount, currency)
    return {} if minor is None else {key: minor, "currency": currency}


def _person(customer_id, email=None, phone=None, first=None, last=None, created=None, shopify_id=None) -> dict:
    """The hub's customer dict with what is known (a missing email is not a removed one)."""
    person = {"source_id": _id(customer_id), "email": normalize_email(email),
              "phone": normalize_phone(phone), "first_name": first or None, "last_name": last or None,
              "created_at": utc(created), "shopify_customer_id": shopify_id}
    return {key: value for key, value in person.items() if value is not None}


def _customer_of(obj: dict) -> dict:
    """The person a charge or order belongs to: its `customer` (id, email, the Shopify id in
    external_customer_id.ecommerce) with name and phone from the billing address."""
    customer = obj.get("customer") if isinstance(obj.get("customer"), dict) else {}
    billing = obj.get("billing_address") or {}
    return _person(customer.get("id") or obj.get("customer_id"), customer.get("email") or obj.get("email"),
                   billing.get("phone"), billing.get("first_name"), billing.get("last_name"),
                   shopify_id=_ecommerce(customer.get("external_customer_id")))


def _subscription_lines(obj: dict) -> list[dict]:
    """A charge's or order's lines that bill a subscription (a charge merges every subscription
    due on its date, each named by purchase_item_id: https://docs.rechargepayments.com/docs/charges)."""
    return [line for line in obj.get("line_items") or []
            if isinstance(line, dict) and line.get("purchase_item_type", "subscription") == "subscription"]


def _subscription_id_of(obj: dict) -> str | None:
    lines = _subscription_lines(obj)
    return _id((lines[0] if lines else {}).get("purchase_item_id") or obj.get("subscription_id"))


# Recharge's 2021-11 subscription statuses; `paused` where the store pauses subscriptions.
# Unknown ones give no status (the one held stays).
STATUSES = {"active": "active", "paused": "paused", "cancelled": "canceled", "expired": "expired"}


def subscription_data(sub: dict, topic: str | None = None) -> dict:
    """The data of a subscription.* event.

    The plan is the product with its variant ("Coffee - 1 kg"); the billing cadence is
    charge_interval_frequency of order_interval_unit (a prepaid subscription ships every
    order_interval_frequency and bills every charge_interval_frequency), and its amount per
    charge is price × quantity × the shipments one charge pays for ("order_interval_unit=month
    and charge_interval_frequency=3 indicate charge every 3 months",
    https://storefront.getrecharge.com/client/docs/types/interfaces/SubscriptionBase).
    """
    raw = str(sub.get("status") or "").lower()
    status = STATUSES.get(raw)
    if topic == "subscription/paused" and status == "active":
        status = "paused"  # the topic is the fact; the object may lag behind it
    unit = str(sub.get("order_interval_unit") or "").lower() or None
    charge_every = _count(sub.get("charge_interval_frequency")) or _count(sub.get("order_interval_frequency"))
    ship_every = _count(sub.get("order_interval_frequency")) or charge_every
    shipments = max(1, charge_every // ship_every) if sub.get("is_prepaid") and charge_every and ship_every else 1
    currency = _currency(sub)
    unit_price = _minor(sub.get("price"), currency)
    quantity = _count(sub.get("quantity"))
    product_id = _ecommerce(sub.get("external_product_id")) or _id(sub.get("shopify_product_id"))
    title = " - ".join(str(part) for part in (sub.get("product_title"), sub.get("variant_title")) if part)
    ended = status in ("canceled", "expired")
    # A pause on Recharge is a charge date moved out: the subscription resumes with the charge
    # still scheduled ("wait until the updated charge date occurs", https://support.getrecharge.com
    # /hc/en-us/articles/22321083437335-Pausing-or-delaying-orders); a paused one with no charge
    # date stays paused until resumed by hand. Only the object's own status says so: one that
    # lags behind its subscription/paused topic may still hold the date the pause cancelled.
    resumes = charge_day(sub.get("next_charge_scheduled_at")) if raw == "paused" else None
    data = {
        "source_id": _id(sub.get("id")),
        "status": status,
        "plan": title or None,
        "plan_id": _ecommerce(sub.get("external_variant_id")) or _id(sub.get("shopify_variant_id")),
        "interval": unit,
        "interval_count": charge_every,
        "quantity": quantity,
        # next_charge_scheduled_at is the date of the next charge (null once cancelled).
        "next_renewal_at": None if ended or (status == "paused" and not resumes)
        else charge_day(sub.get("next_charge_scheduled_at")),
        "resumes_at": resumes,
        "cancel_at_period_end": False,
        "canceled_at": utc(sub.get("cancelled_at")) if ended else None,
        "cancellation_reason": sub.get("cancellation_reason") if ended else None,
        "cancellation_comment": sub.get("cancellation_reason_comments") if ended else None,
        # max_retries_reached: Recharge stopped retrying a failed charge, the cancellation's
        # cause when set (https://developer.rechargepayments.com/2021-11/subscriptions/subscriptions_object).
        "churn_type": (ev.INVOLUNTARY if sub.get("max_retries_reached") else ev.VOLUNTARY) if ended else None,
        "product_ids": [product_id] if product_id else [],
    }
    if unit_price is not None:
        data.update(amount=unit_price * (quantity or 1) * shipments, currency=currency)
    if topic == "subscription/skipped":
        data["renewal_skipped"] = True
    if "expire_after_specific_number_of_charges" in sub:
        # It expires after this many charges, counted from its first (https://support.rechargepayments.com
        # /hc/en-us/articles/360008830673): Renew Now aims at the last (hub.sync.rules.moments.ends_at).
        data["charges_limit"] = _count(sub["expire_after_specific_number_of_charges"])
    # None is news for what a change can clear (a reactivated subscription's cancellation, an
    # expiry removed).
    return {key: value for key, value in data.items()
            if value is not None or key in ("next_renewal_at", "canceled_at", "charges_limit")}


def _count(value) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


# error_type values after which retrying the same card cannot succeed: the customer must give
# another one (e.g. CUSTOMER_NEEDS_TO_UPDATE_CARD,
# https://storefront.getrecharge.com/client/docs/types/interfaces/Charge).
HARD_DECLINES = frozenset({"CUSTOMER_NEEDS_TO_UPDATE_CARD"})


def payment_data(charge: dict, status: str) -> dict:
    """The data of a payment.* event from a charge (one billing cycle, keyed by its id).

    `charge_attempts` counts the attempts made; `retry_date` is when Recharge tries again
    (null when it will not); `error`/`error_type` say why the last attempt failed.
    """
    currency = _currency(charge)
    data = {
        "source_id": _id(charge.get("id")),
        "subscription_source_id": _subscription_id_of(charge),
        "status": status,
        "attempt_count": charge.get("charge_attempts") if isinstance(charge.get("charge_attempts"), int) else None,
        "due_at": charge_day(charge.get("scheduled_at")),
        **_money(charge.get("total_price"), currency),
    }
    if status == "succeeded":
        data["paid_at"] = utc(charge.get("processed_at"))
        # The Shopify order the charge made: its orders/paid then adds no money again.
        data["order_source_id"] = _ecommerce(charge.get("external_order_id"))
    else:
        error_type = text_or_none(charge.get("error_type"))
        data.update(next_retry_at=utc(charge.get("retry_date")) if status == "failed" else None,
                    failure_reason=text_or_none(charge.get("error")) or error_type,
                    decline_code=error_type, hard_decline=(error_type or "").upper() in HARD_DECLINES)
    return {key: value for key, value in data.items() if value is not None or key == "next_retry_at"}


# --- normalizers: (payload, envelope) -> [CanonicalEvent]; payload is the whole body ---------

def _event(name: str, obj: dict, customer: dict, data: dict) -> CanonicalEvent:
    # The object's updated_at orders Recharge's deliveries (retries can arrive late).
    return CanonicalEvent(name=name, source=NAME, occurred_at=utc(obj.get("updated_at") or obj.get("created_at")),
                          customer=customer, data=data)


def customer_upserted(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    c = _object(payload, "customer")
    person = _person(c["id"], c.get("email"), c.get("phone"), c.get("first_name"), c.get("last_name"),
                     c.get("created_at"), _ecommerce(c.get("external_customer_id")))
    return [_event(ev.CUSTOMER_UPSERTED, c, person, {})]


def customer_deleted(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    c = _object(payload, "customer")
    return [_event(ev.CUSTOMER_DELETED, c, _person(c["id"]), {})]


def subscription_upserted(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    sub = _object(payload, "subscription")
    data = subscription_data(sub, envelope.topic)
    name = ev.SUBSCRIPTION_CANCELED if data.get("status") in ("canceled", "expired") else ev.SUBSCRIPTION_UPSERTED
    return [_event(name, sub, _person(sub.get("customer_id")), data)]


def subscription_canceled(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    """subscription/cancelled, and subscription/deleted: a deleted subscription bills no more."""
    sub = _object(payload, "subscription")
    data = subscription_data(sub, envelope.topic)
    return [_event(ev.SUBSCRIPTION_CANCELED, sub, _person(sub.get("customer_id")), data)]


def renewal_upcoming(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    """charge/created (a queued charge) and charge/upcoming: the next renewal, its date and amount,
    one per subscription the charge bills (Recharge merges a customer's subscriptions due the same
    day into one charge, https://docs.getrecharge.com/docs/charges), each with its own line's price."""
    charge = _object(payload, "charge")
    if str(charge.get("status") or "queued").lower() != "queued":
        # A charge already made (a checkout's, status success) or given up is no renewal to come:
        # its date is today's, not the next one.
        return []
    currency, renewal_at = _currency(charge), charge_day(charge.get("scheduled_at"))
    lines = _subscription_lines(charge)
    if len(lines) < 2:
        bills = [(_subscription_id_of(charge), charge.get("total_price"))]
    else:
        bills = [(_id(line.get("purchase_item_id")), line.get("total_price")) for line in lines]
    return [_event(ev.RENEWAL_UPCOMING, charge, _customer_of(charge),
                   {"subscription_source_id": sub_id, "renewal_at": renewal_at, **_money(price, currency)})
            for sub_id, price in bills]


def _payment_event(name: str, status: str):
    def normalize(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
        charge = _object(payload, "charge")
        return [_event(name, charge, _customer_of(charge), payment_data(charge, status))]
    normalize.__name__ = f"payment_{status}"
    return normalize


payment_succeeded = _payment_event(ev.PAYMENT_SUCCEEDED, "succeeded")
payment_failed = _payment_event(ev.PAYMENT_FAILED, "failed")
# Recharge stops retrying after the store's maximum (https://docs.rechargepayments.com/docs/charges,
# "Max_tries_reached"): the cycle stays owed with no attempt to come.
payment_retries_exhausted = _payment_event(ev.PAYMENT_FAILED, "retries_exhausted")


def charge_refunded(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    """charge/refunded: what the charge gave back, against the order it paid for.

    total_refunds is the charge's running total of refunds, not this refund alone.
    """
    charge = _object(payload, "charge")
    currency = _currency(charge)
    refunded = _money(charge.get("total_refunds"), currency)
    data = {"source_id": f"{charge['id']}:refund:{charge.get('total_refunds')}",
            "order_source_id": _ecommerce(charge.get("external_order_id")) or _id(charge["id"]),
            **refunded, "refunded_total": refunded.get("amount")}
    return [_event(ev.ORDER_REFUNDED, charge, _customer_of(charge), data)]


def order_placed(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    """order/created: the store order a paid charge made. Its money is the charge's
    (payment.succeeded counts it), so the order names its subscription and adds no spend.
    It is keyed by that store order's id (external_order_id, https://docs.getrecharge.com/docs/orders),
    which the store's own orders/create names too: one order, counted once.

    order/processed too: a prepaid charge makes its later orders at once, `queued` until each is
    processed, and Recharge says to check status == SUCCESS on order/created or order/processed
    (https://docs.getrecharge.com/docs/submitting-an-order). A queued order is no order yet."""
    order = _object(payload, "order")
    if str(order.get("status")).lower() == "queued":
        return []
    currency = _currency(order)
    lines = [{"product_id": _ecommerce(line.get("external_product_id")),
              "variant_id": _ecommerce(line.get("external_variant_id")), "title": line.get("title"),
              "quantity": _count(line.get("quantity")) or 0,
              "price": _minor(line.get("unit_price") or line.get("price"), currency), "selling_plan_id": None}
             for line in order.get("line_items") or [] if isinstance(line, dict)]
    data = {"source_id": _ecommerce(order.get("external_order_id")) or _id(order["id"]),
            "number": _ecommerce(order.get("external_order_name")),
            "total": _minor(order.get("total_price"), currency), "currency": currency,
            "financial_status": "paid" if str(order.get("status")).lower() == "success" else None,
            "is_subscription": bool(_subscription_lines(order)),
            "placed_at": utc(order.get("processed_at") or order.get("created_at")),
            "line_items": lines, "subscription_source_id": _subscription_id_of(order)}
    return [_event(ev.ORDER_PLACED, order, _customer_of(order), {k: v for k, v in data.items() if v is not None})]


# Topics of API 2021-11 (https://developer.rechargepayments.com/2021-11/webhooks_endpoints/webhooks_available)
# that change a subscriber, a subscription or a payment.
TOPICS = {
    "customer/created": customer_upserted,
    "customer/updated": customer_upserted,
    "customer/activated": customer_upserted,
    "customer/deactivated": customer_upserted,
    "customer/deleted": customer_deleted,
    **dict.fromkeys(("subscription/created", "subscription/updated", "subscription/activated",
                     "subscription/paused", "subscription/skipped", "subscription/unskipped",
                     "subscription/swapped"), subscription_upserted),
    "subscription/cancelled": subscription_canceled,
    "subscription/deleted": subscription_canceled,
    "charge/created": renewal_upcoming,
    "charge/upcoming": renewal_upcoming,
    "charge/paid": payment_succeeded,
    "charge/failed": payment_failed,
    "charge/max_retries_reached": payment_retries_exhausted,
    "charge/refunded": charge_refunded,
    "order/created": order_placed,
    "order/processed": order_placed,
}
