"""Shopify webhooks: verify, describe and normalize into canonical events (design §4).

Payloads of several API versions normalize here: the old REST shapes (`accepts_marketing`
inside customers), customers with `email_marketing_consent` (before 2025-01), and the
current ones (consent in its own topics, contracts and billing attempts carrying ids only,
order lines naming their selling plan from 2026-10). Normalizers are pure; the one piece
of I/O, fetching a subscription contract, sits in ENRICH and runs in the worker first.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from calendar import monthrange
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from hub import events as ev
from hub.errors import RetryLater, SignatureInvalid, SourceNotConfigured
from hub.events import CanonicalEvent
from hub.values import Money, normalize_email, normalize_phone, readable_utc, utc
from webhooks.envelope import Envelope, body_hash_id, header
from webhooks.shopify import api as shopify_api

NAME = "shopify"
# What verify() needs: without it every webhook is refused (named at `hub run`'s start).
SECRET_SETTINGS = ("SHOPIFY_WEBHOOK_SECRET",)

# Shopify's contract statuses (lower-case in webhooks, upper-case in GraphQL) → canonical.
# FAILED: "The contract has ended because billing failed and no further billing attempts are
# expected" (https://shopify.dev/docs/api/admin-graphql/latest/enums/SubscriptionContractSubscriptionStatus):
# cancelled, by the failed payment (involuntary churn).
_STATUSES = {"active": "active", "paused": "paused", "cancelled": "canceled",
             "expired": "expired", "failed": "canceled"}
_ENDED_BY_BILLING = "failed"

# Billing-attempt error codes after which retrying the same payment method cannot succeed:
# the customer has to give a new one (SubscriptionBillingAttemptErrorCode, lower-cased).
HARD_DECLINES = frozenset({
    "expired_payment_method", "expired_card", "invalid_payment_method", "payment_method_not_found",
    "payment_method_not_specified", "payment_method_revoked", "payment_method_unsupported",
    "buyer_canceled_payment_method", "invalid_customer_billing_agreement", "card_number_incorrect",
    "incorrect_number", "invalid_number", "invalid_expiry_date", "fraud_suspected",
})


# --- verify and describe -------------------------------------------------------------------



def verify(settings, headers, body: bytes) -> None:
    """Raise SignatureInvalid unless X-Shopify-Hmac-Sha256 is the base64 HMAC-SHA256 of the body."""
    secret = settings.SHOPIFY_WEBHOOK_SECRET
    if not secret:
        raise SourceNotConfigured("shopify webhooks are not configured "
                                  "(set SHOPIFY_WEBHOOK_SECRET or SHOPIFY_CLIENT_SECRET)")
    given = header(headers, "X-Shopify-Hmac-Sha256")
    if not given:
        raise SignatureInvalid("missing X-Shopify-Hmac-Sha256 header")
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    if not hmac.compare_digest(expected, given.strip().encode("utf-8", "replace")):
        raise SignatureInvalid("X-Shopify-Hmac-Sha256 does not match the body")


def describe(headers, body: bytes) -> Envelope:
    """Topic, dedupe id and delivery metadata from the headers; never raises."""
    topic = (header(headers, "X-Shopify-Topic") or "").strip()
    event_id = header(headers, "X-Shopify-Event-Id")
    webhook_id = header(headers, "X-Shopify-Webhook-Id")
    # The event id is shared by every delivery of one merchant action (two subscriptions to
    # a topic send it twice); the webhook id only by the retries of one delivery.
    if event_id:
        dedupe = f"{topic}:{event_id}"
    elif webhook_id:
        dedupe = f"webhook:{webhook_id}"
    else:
        dedupe = body_hash_id(body if isinstance(body, bytes) else str(body).encode())
    sent_at = header(headers, "X-Shopify-Triggered-At")
    triggered_at = readable_utc(sent_at)
    if triggered_at is None and sent_at:
        # A time no datetime holds (20 digits, say) is no reason to refuse the webhook; it
        # was triggered by the time it arrived, which is now.
        triggered_at = datetime.now(timezone.utc)
    return Envelope(event_id=dedupe, topic=topic, shop=header(headers, "X-Shopify-Shop-Domain"),
                    api_version=header(headers, "X-Shopify-API-Version"),
                    triggered_at=triggered_at, extra={"webhook_id": webhook_id, "event_id": event_id})


# --- small readers -------------------------------------------------------------------------

def _id(value) -> str | None:
    """A platform id as text; the number of a gid ("gid://shopify/Customer/7" → "7")."""
    if value is None or value == "":
        return None
    text = str(value)
    return text.rsplit("/", 1)[-1].split("?", 1)[0] if text.startswith("gid://") else text


def _lower(value) -> str | None:
    return str(value).lower() if value else None


def _upper(value) -> str | None:
    return str(value).upper() if value else None


def _compact(values: dict) -> dict:
    """Leave out what the payload does not carry: the model never overwrites a fact with nothing."""
    return {key: value for key, value in values.items() if value is not None}


def _minor(value, currency: str | None) -> int | None:
    """Integer minor units of a Shopify decimal string."""
    if value in (None, "") or not currency:
        return None
    return Money.from_decimal(value, currency).amount


def _triggered_at(envelope: Envelope) -> datetime | None:
    """When Shopify triggered the delivery, UTC-aware (an envelope read from SQLite may be naive)."""
    return utc(envelope.triggered_at)


def _occurred_at(payload: dict, envelope: Envelope, key: str = "updated_at") -> datetime | None:
    """The object's own time when it has one, else when Shopify triggered the delivery."""
    return utc(payload.get(key)) or _triggered_at(envelope)


def _customer(c: dict | None, email: str | None = None) -> dict:
    """Canonical customer fields of a REST customer object."""
    c = c or {}
    return _compact({"source_id": _id(c.get("id")),
                     "email": normalize_email(c.get("email") or email),
                     "phone": normalize_phone(c.get("phone")),
                     "first_name": c.get("first_name") or None,
                     "last_name": c.get("last_name") or None,
                     "created_at": utc(c.get("created_at"))})


# --- customers and consent -----------------------------------------------------------------

def _consent_event(channel: str, consent: dict, customer: dict, fallback: datetime | None):
    """consent.changed from a Shopify consent object, or None when it names no state."""
    state = _lower(consent.get("state"))
    if not state:
        return None  # a null state says nothing: consent is never inferred
    consented_at = utc(consent.get("consent_updated_at"))
    data = _compact({"channel": channel, "state": state, "consented_at": consented_at,
                     "opt_in_level": _lower(consent.get("opt_in_level"))})
    # Shopify keeps the consent record with the latest consent_updated_at: order them by it.
    return CanonicalEvent(ev.CONSENT_CHANGED, NAME, consented_at or fallback, customer, data)


def _embedded_consents(payload: dict, customer: dict, when) -> list[CanonicalEvent]:
    """Consent inside customer payloads: `*_marketing_consent` before 2025-01, `accepts_marketing`
    in older ones."""
    consents = []
    if isinstance(payload.get("email_marketing_consent"), dict):
        consents.append(("email", payload["email_marketing_consent"]))
    elif isinstance(payload.get("accepts_marketing"), bool):
        consents.append(("email", {
            "state": "subscribed" if payload["accepts_marketing"] else "not_subscribed",
            "opt_in_level": payload.get("marketing_opt_in_level"),
            "consent_updated_at": payload.get("accepts_marketing_updated_at")}))
    if isinstance(payload.get("sms_marketing_consent"), dict):
        consents.append(("sms", payload["sms_marketing_consent"]))
    events = (_consent_event(channel, consent, customer, when) for channel, consent in consents)
    return [event for event in events if event]


def customer_upserted(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    when = _occurred_at(payload, envelope)
    customer = _customer(payload)
    return [CanonicalEvent(ev.CUSTOMER_UPSERTED, NAME, when, customer),
            *_embedded_consents(payload, customer, when)]


def customer_deleted(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    return [CanonicalEvent(ev.CUSTOMER_DELETED, NAME, _occurred_at(payload, envelope),
                           _compact({"source_id": _id(payload.get("id"))}))]


def email_consent_changed(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    customer = _compact({"source_id": _id(payload.get("customer_id")),
                         "email": normalize_email(payload.get("email_address"))})
    event = _consent_event("email", payload.get("email_marketing_consent") or {}, customer,
                           _triggered_at(envelope))
    return [event] if event else []


def sms_consent_changed(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    customer = _compact({"source_id": _id(payload.get("id") or payload.get("customer_id")),
                         "phone": normalize_phone(payload.get("phone"))})
    event = _consent_event("sms", payload.get("sms_marketing_consent") or {}, customer,
                           _triggered_at(envelope))
    return [event] if event else []


# --- orders and refunds --------------------------------------------------------------------

def _selling_plan_id(line: dict) -> str | None:
    """A line's selling plan: `selling_plan_id` from API 2026-10, `selling_plan(_allocation)` in
    other shapes."""
    allocation = line.get("selling_plan_allocation") or {}
    plan = line.get("selling_plan") or allocation.get("selling_plan") or {}
    return _id(line.get("selling_plan_id") or (plan.get("id") if isinstance(plan, dict) else plan))


def _selling_plan_name(line: dict) -> dict:
    """The plan's display name ("Delivery every 2 weeks") where the line carries it: storefront
    `selling_plan_allocation.selling_plan.name`, GraphQL `sellingPlan.name`; Orders webhooks name
    only the id (https://shopify.dev/docs/api/liquid/objects/selling_plan)."""
    plan = line.get("selling_plan") or (line.get("selling_plan_allocation") or {}).get("selling_plan")
    name = plan.get("name") if isinstance(plan, dict) else None
    return {"selling_plan_name": name} if name else {}


def _line_item(line: dict, currency: str | None) -> dict:
    return {"product_id": _id(line.get("product_id")), "variant_id": _id(line.get("variant_id")),
            "title": line.get("title"), "quantity": int(line.get("quantity") or 0),
            "price": _minor(line.get("price"), currency), "selling_plan_id": _selling_plan_id(line),
            **_selling_plan_name(line)}


def _order_data(order: dict) -> dict:
    currency = _upper(order.get("currency"))
    lines = [_line_item(line, currency) for line in order.get("line_items") or []]
    # Renewals are made by the contract (source_name "subscription_contract…"); first orders
    # show it in their lines, which name a selling plan only from API 2026-10.
    is_subscription = (str(order.get("source_name") or "").startswith("subscription_contract")
                       or any(line["selling_plan_id"] for line in lines))
    number = order.get("name") or order.get("order_number") or order.get("number")
    return _compact({"source_id": _id(order.get("id")), "number": str(number) if number else None,
                     "total": _minor(order.get("total_price"), currency), "currency": currency,
                     "financial_status": order.get("financial_status"),
                     "is_subscription": is_subscription,
                     "placed_at": utc(order.get("processed_at") or order.get("created_at")),
                     "line_items": lines})


def _order_event(name: str):
    def normalize(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
        email = payload.get("email") or payload.get("contact_email")
        order = CanonicalEvent(name, NAME, _occurred_at(payload, envelope),
                               _customer(payload.get("customer"), email), _order_data(payload))
        # The order's refunds so far, as refunds/create tells of each (same id and time: one
        # refund, counted once); a backfill learns of those made before the hub only here.
        # The order's own totals show the rate of a refund that names none (a custom amount).
        totals = [payload.get("total_price_set"), payload.get("subtotal_price_set")]
        refunds = [event for refund in payload.get("refunds") or [] if isinstance(refund, dict)
                   for event in order_refunded({**refund, "order_id": payload.get("id")}, envelope, totals)]
        return [order, *refunds]
    return normalize


def _shop_money(obj: dict, key: str) -> dict:
    return ((obj.get(f"{key}_set") or {}).get("shop_money")) or {}


# The parts of a refund that name their money twice, in the shop's currency and in the one the
# customer paid in (https://shopify.dev/docs/api/admin-rest/latest/resources/refund).
_REFUND_PARTS = (("refund_line_items", ("subtotal_set", "total_tax_set")),
                 ("refund_shipping_lines", ("subtotal_amount_set", "tax_amount_set")),
                 ("order_adjustments", ("amount_set", "tax_amount_set")))


def _money_bags(refund: dict, order_bags) -> list[dict]:
    """The refund's money bags, then its order's, that name the shop's currency."""
    bags = [part.get(key) for name, keys in _REFUND_PARTS for part in refund.get(name) or []
            if isinstance(part, dict) for key in keys]
    bags += [refund.get("total_duties_set"), refund.get("total_additional_fees_set"), *order_bags]
    return [bag for bag in bags if isinstance(bag, dict)
            and ((bag.get("shop_money") or {}).get("currency_code"))]


def _shop_rate(bags: list[dict], currency: str) -> Decimal | None:
    """Shop money per unit of `currency`, as Shopify converted this order's own amounts."""
    shop = paid = Decimal(0)
    for bag in bags:
        presentment = bag.get("presentment_money") or {}
        if _upper(presentment.get("currency_code")) == currency and Decimal(str(presentment.get("amount") or 0)):
            shop += abs(Decimal(str(bag["shop_money"].get("amount") or 0)))
            paid += abs(Decimal(str(presentment["amount"])))
    return shop / paid if paid else None


def _refund_money(refund: dict, order_bags=()) -> tuple[int | None, str | None]:
    """Money given back, in minor units of the shop's currency, as orders are counted.

    The refund transactions, else the refunded lines' subtotal. "Transactions attached to
    multi-currency orders are in the presentment currency by default"
    (https://shopify.dev/docs/api/admin-rest/latest/resources/transaction), and current
    payloads leave their `currency` null: such an amount is turned into shop money at the rate
    the refund's own money bags (or its order's) show. None when nothing shows the rate.
    """
    bags = _money_bags(refund, order_bags)
    shop = _upper(bags[0]["shop_money"]["currency_code"]) if bags else None
    presentment = next((_upper((bag.get("presentment_money") or {}).get("currency_code")) for bag in bags
                        if (bag.get("presentment_money") or {}).get("currency_code")), None)
    refunds = [t for t in refund.get("transactions") or []
               if t.get("kind") == "refund" and t.get("status") in ("success", None)]
    if not refunds:
        currency = shop or next((_upper(t["currency"]) for t in refund.get("transactions") or []
                                 if t.get("currency")), None)
        return (_lines_subtotal(refund, currency) if currency else None), currency
    shop = shop or next((_upper(t["currency"]) for t in refunds if t.get("currency")), None)
    if not shop:
        return None, None
    total = Decimal(0)
    for transaction in refunds:
        amount = Decimal(str(transaction.get("amount") or 0))
        currency = _upper(transaction.get("currency")) or presentment or shop
        if currency != shop:
            rate = _shop_rate(bags, currency)
            if rate is None:
                return None, shop
            amount *= rate
        total += amount
    return _minor(total, shop), shop


def _lines_subtotal(refund: dict, currency: str) -> int:
    total = 0
    for line in refund.get("refund_line_items") or []:
        subtotal = _shop_money(line, "subtotal").get("amount") or line.get("subtotal")
        if subtotal is None:  # oldest shape: only the refunded line and its quantity
            price = (line.get("line_item") or {}).get("price") or 0
            subtotal = Decimal(str(price)) * int(line.get("quantity") or 0)
        total += _minor(subtotal, currency)
    return total


def order_refunded(payload: dict, envelope: Envelope, order_bags=()) -> list[CanonicalEvent]:
    amount, currency = _refund_money(payload, order_bags)
    data = _compact({"source_id": _id(payload.get("id")),
                     "order_source_id": _id(payload.get("order_id")),
                     "amount": amount, "currency": currency})
    # A refund never changes after it is made: its creation time is its own time.
    when = _occurred_at(payload, envelope, "created_at")
    return [CanonicalEvent(ev.ORDER_REFUNDED, NAME, when, {}, data)]


# --- subscription contracts and billing attempts -------------------------------------------

def _account_url(shop: str | None) -> str | None:
    # Shopify mints no "update your card" link for cards in general
    # (customerPaymentMethodGetUpdateUrl serves Shop Pay only; customerPaymentMethodSendUpdateEmail
    # sends Shopify's own email), so dunning points at the customer account, where customers
    # manage their subscriptions and cards.
    return f"https://{shop}/account" if shop else None


def _minus_interval(end: datetime | None, interval: str | None, count) -> datetime | None:
    """Start of the billing period that ends at `end` (Shopify contracts only name its end)."""
    if not (end and interval and count):
        return None
    if interval in ("day", "week"):
        return end - timedelta(**{f"{interval}s": int(count)})
    if interval not in ("month", "year"):
        return None
    months = int(count) * (12 if interval == "year" else 1)
    year, month = divmod(end.year * 12 + end.month - 1 - months, 12)
    month += 1
    return end.replace(year=year, month=month, day=min(end.day, monthrange(year, month)[1]))


def _contract_amount(lines: list[dict], currency: str | None) -> int | None:
    """What one billing cycle charges for the lines (currentPrice × quantity; no shipping)."""
    if not lines or not currency:
        return None
    return sum(_minor(line["currentPrice"]["amount"], line["currentPrice"].get("currencyCode") or currency)
               * int(line.get("quantity") or 0)
               for line in lines)


def _next_cycle(cycles: list[dict]) -> datetime | None:
    """When the first upcoming billing cycle neither skipped nor billed is expected to bill."""
    return utc((shopify_api.next_to_bill(cycles) or {}).get("billingAttemptExpectedDate"))


# Marks a contract reconciliation read again for its upcoming renewal (webhooks.shopify.backfill).
RENEWAL_READ = "renewal_read"


def _renewal_charge(cycles: list[dict] | None, contract: dict, contract_id, customer: dict, when,
                    always: bool = False) -> list[CanonicalEvent]:
    """Renewal Upcoming with what the next renewal bills, when its cycle was edited for itself
    alone (another product, quantity or price: `editedContract`'s lines, fetched with the
    cycles), or `always` (a cycle-edit webhook, a renewal read again by reconciliation: an edit
    taken back bills the contract's lines again). The reminders name that amount for that
    renewal (RenewalState.next_charge)."""
    upcoming = shopify_api.next_to_bill(cycles)
    edited = (upcoming or {}).get("editedContract")
    if upcoming is None or not (edited or always):
        return []
    priced = edited or contract
    currency = _upper(priced.get("currencyCode"))
    amount = _contract_amount(((priced.get("lines") or {}).get("nodes")) or [], currency)
    renewal_at = utc(upcoming.get("billingAttemptExpectedDate"))
    if amount is None or renewal_at is None:
        return []
    return [CanonicalEvent(ev.RENEWAL_UPCOMING, NAME, when, customer, {
        "subscription_source_id": _id(contract_id), "renewal_at": renewal_at, "amount": amount,
        "currency": currency})]


def _subscription_data(contract: dict, webhook: dict, shop: str | None, cycles: list[dict] | None = None) -> dict:
    """Subscription fields from the fetched contract, else from what the webhook names. With
    the contract's upcoming billing `cycles`, the next renewal is the first one not skipped."""
    policy = contract.get("billingPolicy") or webhook.get("billing_policy") or {}
    lines = (contract.get("lines") or {}).get("nodes") or []
    first = lines[0] if lines else {}
    currency = _upper(contract.get("currencyCode") or webhook.get("currency_code"))
    interval = _lower(policy.get("interval"))
    count = policy.get("intervalCount") or policy.get("interval_count")
    renewal = utc(contract.get("nextBillingDate"))
    status = _lower(contract.get("status") or webhook.get("status"))
    billing_ended = status == _ENDED_BY_BILLING
    return _compact({
        "source_id": _id(contract.get("id") or webhook.get("admin_graphql_api_id")
                         or webhook.get("id")),
        "status": _STATUSES.get(status),
        "churn_type": ev.INVOLUNTARY if billing_ended else None,
        "cancellation_reason": "billing failed" if billing_ended else None,
        # The product is what the customer subscribed to; the selling plan's name is its
        # delivery text ("Delivered every 4 weeks"), the interval fields already say that.
        "plan": first.get("title") or first.get("sellingPlanName"),
        "plan_id": _id(first.get("sellingPlanId")),
        "interval": interval, "interval_count": int(count) if count else None,
        "amount": _contract_amount(lines, currency), "currency": currency,
        "quantity": sum(int(line.get("quantity") or 0) for line in lines) if lines else None,
        "next_renewal_at": None if billing_ended else (_next_cycle(cycles) if cycles else renewal),
        "current_period_end": renewal,
        "current_period_start": _minus_interval(renewal, interval, count),
        "product_ids": [_id(line["productId"]) for line in lines if line.get("productId")] or None,
        "update_payment_url": _account_url(shop),
    })


def _contract_customer(contract: dict, fallback_id=None) -> dict:
    c = contract.get("customer") or {}
    email = c.get("email") or (c.get("defaultEmailAddress") or {}).get("emailAddress")
    phone = c.get("phone") or (c.get("defaultPhoneNumber") or {}).get("phoneNumber")
    return _compact({"source_id": _id(c.get("id") or fallback_id), "email": normalize_email(email),
                     "phone": normalize_phone(phone), "first_name": c.get("firstName") or None,
                     "last_name": c.get("lastName") or None})


def _contract_time(contract: dict, envelope: Envelope) -> datetime | None:
    # A fetched contract is the state as of the fetch, which came after the delivery was
    # triggered: never older than triggered_at, and newer still when updatedAt says so
    # (a replay months later fetches today's contract).
    times = [t for t in (utc(contract.get("updatedAt")), _triggered_at(envelope)) if t]
    return max(times) if times else None


def _subscription_event(name: str):
    def normalize(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
        contract = payload.get("contract") or {}
        customer = _contract_customer(contract, payload.get("admin_graphql_api_customer_id")
                                      or payload.get("customer_id"))
        when, cycles = _contract_time(contract, envelope), payload.get("billing_cycles")
        data = _subscription_data(contract, payload, envelope.shop, cycles)
        return [CanonicalEvent(name, NAME, when, customer, data),
                *_renewal_charge(cycles, contract, data.get("source_id"), customer, when,
                                 always=payload.get(RENEWAL_READ) is True)]
    return normalize


def _cycle_event(skipped: bool | None):
    """subscription_billing_cycles/skip and /unskip, subscription_billing_cycle_edits/create,
    update and delete (a cycle given another billing date; `skipped` None: a skip when the
    edited cycle says so): the contract with its upcoming cycles (ENRICH), whose first cycle
    not skipped is the next renewal; a skip also says which renewal it skipped
    (`billing_attempt_expected_date`, a later cycle's as well as the next).
    Payload fields: subscription_contract_id, cycle_index, cycle_start_at, cycle_end_at,
    billing_attempt_expected_date, skipped, edited, contract_edit (WebhookSubscriptionTopic
    SUBSCRIPTION_BILLING_CYCLES_SKIP, "Occurs whenever a subscription contract billing cycle is
    skipped", https://shopify.dev/docs/api/admin-graphql/latest/enums/WebhookSubscriptionTopic)."""
    def normalize(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
        contract = payload.get("contract")
        if not contract:
            return []  # a contract this app may not read: nothing to hold the skip against
        contract_id = (payload.get("admin_graphql_api_subscription_contract_id")
                       or payload.get("subscription_contract_id"))
        cycles = payload.get("billing_cycles")
        data = _subscription_data(contract, {"id": contract_id}, envelope.shop, cycles)
        if skipped or (skipped is None and payload.get("skipped") is True):
            data.update(_compact({"renewal_skipped": True,
                                  "skipped_renewal_at": utc(payload.get("billing_attempt_expected_date"))}))
        when, customer = _contract_time(contract, envelope), _contract_customer(contract)
        return [CanonicalEvent(ev.SUBSCRIPTION_UPSERTED, NAME, when, customer, data),
                *_renewal_charge(cycles, contract, data.get("source_id"), customer, when,
                                 always=skipped is None)]
    return normalize


def _payment_event(name: str, status: str):
    def normalize(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
        contract = payload.get("contract") or {}
        contract_id = (payload.get("admin_graphql_api_subscription_contract_id")
                       or payload.get("subscription_contract_id"))
        subscription = _subscription_data(contract, {"id": contract_id}, envelope.shop, payload.get("billing_cycles"))
        code = _lower(payload.get("error_code"))
        order_id = _id(payload.get("admin_graphql_api_order_id") or payload.get("order_id"))
        data = _compact({
            # Current samples send a null attempt id; the idempotency key names the attempt then.
            # An attempt is not its billing cycle: retries of one cycle update one payment.
            "source_id": _id(payload.get("admin_graphql_api_id") or payload.get("id"))
            or payload.get("idempotency_key"), "per_attempt": True,
            "subscription_source_id": _id(contract_id), "status": status,
            # The order a successful attempt made. Its orders/paid counts the money: the attempt
            # carries no amount, and what the contract bills per cycle (shown on the payment) is in
            # the customer's currency, without shipping or tax, where the order is the shop's money.
            "order_source_id": order_id, "spend_from_order": bool(order_id) or None,
            "amount": subscription.get("amount"), "currency": subscription.get("currency"),
            "failure_reason": payload.get("error_message"), "decline_code": code,
            "hard_decline": (code in HARD_DECLINES) if code else None,
            "update_payment_url": subscription.get("update_payment_url"),
            "paid_at": _triggered_at(envelope) if status == "succeeded" else None})
        customer = _contract_customer(contract)
        payment = CanonicalEvent(name, NAME, _triggered_at(envelope), customer, data)
        if not contract:
            return [payment]
        # Shopify sends no contract webhook when a billing moves the next billing date: the
        # fetched contract brings it. It goes first, so the attempt finds its contract's cycle.
        return [CanonicalEvent(ev.SUBSCRIPTION_UPSERTED, NAME, _contract_time(contract, envelope),
                               customer, subscription), payment]
    return normalize


# --- payment methods, privacy, app, inventory ----------------------------------------------

def payment_method_updated(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    card = payload.get("payment_instrument") or {}
    customer = _compact({"source_id": _id(payload.get("admin_graphql_api_customer_id")
                                          or payload.get("customer_id"))})
    data = _compact({"source_id": _id(payload.get("admin_graphql_api_id")) or payload.get("token"),
                     "brand": _lower(card.get("brand")), "last4": card.get("last_digits"),
                     "exp_month": int(card["month"]) if card.get("month") else None,
                     "exp_year": int(card["year"]) if card.get("year") else None})
    when = _triggered_at(envelope)
    return [CanonicalEvent(ev.PAYMENT_METHOD_UPDATED, NAME, when, customer, data)]


def payment_method_revoked(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    [event] = payment_method_updated(payload, envelope)
    event.data.update(exp_month=None, exp_year=None)  # the card is gone: no expiry to warn about
    return [event]


def subscriber_erase(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    # customers/redact names one customer; shop/redact (48 h after uninstall) names none,
    # which means every subscriber of that shop.
    shop = payload.get("shop_domain") or envelope.shop
    return [CanonicalEvent(ev.SUBSCRIBER_ERASE, NAME, _triggered_at(envelope),
                           _customer(payload.get("customer")), _compact({"shop": shop}))]


def data_request(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    request_id = _id((payload.get("data_request") or {}).get("id"))
    return [CanonicalEvent(ev.DATA_REQUEST, NAME, _triggered_at(envelope),
                           _customer(payload.get("customer")),
                           _compact({"request_id": request_id}))]


def app_uninstalled(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    shop = envelope.shop or payload.get("myshopify_domain") or payload.get("domain")
    return [CanonicalEvent(ev.APP_UNINSTALLED, NAME, _triggered_at(envelope), {},
                           _compact({"shop": shop}))]


def inventory_changed(payload: dict, envelope: Envelope) -> list[CanonicalEvent]:
    # The level names its inventory item only; rules map items to the products in shipments.
    data = _compact({"inventory_item_id": _id(payload.get("inventory_item_id")),
                     "available": payload.get("available")})
    return [CanonicalEvent(ev.INVENTORY_CHANGED, NAME, _occurred_at(payload, envelope), {}, data)]


TOPICS = {
    "customers/create": customer_upserted,
    "customers/update": customer_upserted,
    "customers/delete": customer_deleted,
    "customers_email_marketing_consent/update": email_consent_changed,
    "customers_marketing_consent/update": sms_consent_changed,
    "orders/create": _order_event(ev.ORDER_PLACED),
    "orders/paid": _order_event(ev.ORDER_PAID),
    "orders/cancelled": _order_event(ev.ORDER_CANCELLED),
    "refunds/create": order_refunded,
    "subscription_contracts/create": _subscription_event(ev.SUBSCRIPTION_UPSERTED),
    "subscription_contracts/update": _subscription_event(ev.SUBSCRIPTION_UPSERTED),
    "subscription_contracts/activate": _subscription_event(ev.SUBSCRIPTION_UPSERTED),
    "subscription_contracts/pause": _subscription_event(ev.SUBSCRIPTION_UPSERTED),
    "subscription_contracts/fail": _subscription_event(ev.SUBSCRIPTION_CANCELED),
    "subscription_contracts/cancel": _subscription_event(ev.SUBSCRIPTION_CANCELED),
    "subscription_contracts/expire": _subscription_event(ev.SUBSCRIPTION_CANCELED),
    "subscription_billing_cycles/skip": _cycle_event(skipped=True),
    "subscription_billing_cycles/unskip": _cycle_event(skipped=False),
    "subscription_billing_cycle_edits/create": _cycle_event(skipped=None),
    "subscription_billing_cycle_edits/update": _cycle_event(skipped=None),
    "subscription_billing_cycle_edits/delete": _cycle_event(skipped=None),
    "subscription_billing_attempts/success": _payment_event(ev.PAYMENT_SUCCEEDED, "succeeded"),
    "subscription_billing_attempts/failure": _payment_event(ev.PAYMENT_FAILED, "failed"),
    "subscription_billing_attempts/challenged": _payment_event(ev.PAYMENT_ACTION_REQUIRED,
                                                               "action_required"),
    "customer_payment_methods/create": payment_method_updated,
    "customer_payment_methods/update": payment_method_updated,
    "customer_payment_methods/revoke": payment_method_revoked,
    "customers/redact": subscriber_erase,
    "shop/redact": subscriber_erase,
    "customers/data_request": data_request,
    "app/uninstalled": app_uninstalled,
    "inventory_levels/update": inventory_changed,
}


# --- enrichment (I/O, run by the worker before normalizing) --------------------------------

def _with_contract(contract_id_of):
    """ENRICH step: fetch the contract a webhook names, store it under payload["contract"]."""
    def enrich(payload: dict, settings) -> dict:
        contract_id = contract_id_of(payload)
        if payload.get("contract"):
            return payload  # listed with its contract (backfill, reconciliation): nothing to fetch
        # Only the app that made a contract may read it (read_own_subscription_contracts): unless
        # the hub's app is that app, the subscription app's own API is where it lives.
        if not (settings.SHOPIFY_OWNS_CONTRACTS and shopify_api.is_configured(settings) and contract_id):
            return payload  # the normalizer then emits what the ids allow
        try:
            contract = shopify_api.fetch_contract(settings, contract_id)
            cycles = shopify_api.upcoming_cycles(settings, contract)
        except shopify_api.ContractNotReadable:
            return payload  # another app's contract: the ids, not a failed row (a retry reads no more)
        except shopify_api.ShopifyAPIError as exc:
            if exc.transient:  # the row waits and tries again by itself (hub.sync.inbox)
                raise RetryLater(0, f"Shopify did not answer the contract's query: {exc}") from exc
            raise
        return {**payload, "contract": contract, **({"billing_cycles": cycles} if cycles is not None else {})}
    return enrich


_enrich_contract = _with_contract(lambda p: p.get("admin_graphql_api_id") or p.get("id"))
_enrich_attempt = _with_contract(lambda p: p.get("admin_graphql_api_subscription_contract_id")
                                 or p.get("subscription_contract_id"))

# Topics Shopify sends only to the app that owns the contracts (SHOPIFY_OWNS_CONTRACTS).
CONTRACT_TOPICS = frozenset(topic for topic in TOPICS if topic.startswith("subscription_"))
# Contract and billing-attempt webhooks carry ids only (no email, price or next billing date).
ENRICH = {topic: (_enrich_contract if topic.startswith("subscription_contracts/")
                 else _enrich_attempt)
          for topic in CONTRACT_TOPICS}
