"""The simulated store's happenings (store.py beside this module) as Shopify's, Recharge's and Stripe's webhooks.

Each platform class turns one Happening into the webhooks that platform sends for it,
signed as the platform signs them, in the shapes of the samples the normalizers are tested
with (tests/samples/shopify/, tests/samples/recharge/, tests/fixtures/stripe/pay/: Shopify API
2026-10, Recharge API 2021-11, Stripe API 2025-03-31 "basil", periods on subscription items,
an invoice's subscription under `parent`).

Shopify-side subscribers come as a real store's do. Their subscription app owns the contracts
and billing attempts, whose webhooks go to that app only (`read_own_subscription_contracts`,
https://shopify.dev/docs/apps/build/purchase-options/subscriptions/contracts): the hub sees the
orders the app places, whose lines name their selling plan (ShopifyWebhooks), or, for stores
running Recharge, Recharge's own webhooks (RechargeWebhooks).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from standins import store as s

API_VERSION_SHOPIFY = "2026-10"
API_VERSION_STRIPE = "2025-03-31.basil"


@dataclass(frozen=True)
class Webhook:
    """One signed delivery, ready to POST to /webhooks/<source>."""

    source: str
    topic: str
    body: bytes
    headers: dict


def _iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _ts(at: datetime | None) -> int | None:
    return int(at.timestamp()) if at else None


def _decimal(minor: int) -> str:
    return f"{minor / 100:.2f}"


class ShopifyWebhooks:
    """Shopify, for a store whose subscription app (Shopify Subscriptions, Skio, Loop…) owns the
    contracts: customers, email consent, and the orders the app places, each line naming its
    selling plan (`selling_plan_id`, API 2026-10). A failed billing attempt, a plan change or a
    cancellation reaches only the app: the hub learns them from the orders that do or do not come."""

    source = "shopify"
    trials = False  # selling plans here bill from the first order

    def __init__(self, secret: str, shop: str = "demo-roastery.myshopify.com"):
        self.secret, self.shop = secret, shop
        self._serial = 0

    def _next(self) -> int:
        self._serial += 1
        return self._serial

    # Ids -------------------------------------------------------------------------------

    @staticmethod
    def customer_id(c: s.Customer) -> int:
        return 7_100_000_000 + c.number

    @staticmethod
    def product(plan: s.Plan) -> tuple[int, int, int]:
        """(product id, variant id, selling plan id) of a plan."""
        n = s.PLANS.index(plan) + 1
        return 8_800_000_000 + n, 4_400_000_000 + n, 690_000_000 + n

    @staticmethod
    def inventory_item(plan: s.Plan) -> int:
        return 4_900_000_000 + s.PLANS.index(plan) + 1

    # Payloads --------------------------------------------------------------------------

    def _customer(self, c: s.Customer, at: datetime) -> dict:
        cid = self.customer_id(c)
        return {"id": cid, "email": c.email, "created_at": _iso(c.joined_at), "updated_at": _iso(at),
                "first_name": c.first_name, "last_name": c.last_name, "state": "enabled", "note": None,
                "verified_email": True, "multipass_identifier": None, "tax_exempt": False,
                "phone": c.phone, "currency": s.CURRENCY, "addresses": [], "tax_exemptions": [],
                "admin_graphql_api_id": f"gid://shopify/Customer/{cid}", "default_address": None}

    def _order(self, c: s.Customer, at: datetime, first: bool) -> dict:
        number = self._next()
        oid = 6_300_000_000_000 + number
        product, variant, plan = self.product(c.plan)
        price = _decimal(c.plan.amount)
        money = {"shop_money": {"amount": price, "currency_code": s.CURRENCY},
                 "presentment_money": {"amount": price, "currency_code": s.CURRENCY}}
        customer = {k: v for k, v in self._customer(c, at).items()
                    if k not in ("addresses", "default_address")}
        return {
            "id": oid, "admin_graphql_api_id": f"gid://shopify/Order/{oid}", "app_id": None,
            "buyer_accepts_marketing": c.consent == "subscribed", "cancel_reason": None,
            "cancelled_at": None, "confirmed": True, "contact_email": c.email, "created_at": _iso(at),
            "currency": s.CURRENCY, "current_total_price": price, "email": c.email,
            "financial_status": "paid", "fulfillment_status": None, "name": f"#{1000 + number}",
            "number": number, "order_number": 1000 + number, "phone": c.phone,
            "presentment_currency": s.CURRENCY, "processed_at": _iso(at),
            # Renewal orders are made by the app's contract; first orders by the storefront.
            "source_name": "web" if first else "subscription_contract_checkout_one",
            "subtotal_price": price, "subtotal_price_set": money, "tags": "Subscription",
            "test": False, "total_price": price, "total_price_set": money, "total_tax": "0.00",
            "updated_at": _iso(at), "customer": customer,
            "line_items": [{
                "id": 1_500_000_000_000 + number,
                "admin_graphql_api_id": f"gid://shopify/LineItem/{1_500_000_000_000 + number}",
                "name": c.plan.name, "price": price, "price_set": money, "product_exists": True,
                "product_id": product, "quantity": 1, "requires_shipping": True, "sku": f"ROAST-{c.plan.code.upper()}",
                "taxable": True, "title": c.plan.name, "total_discount": "0.00", "variant_id": variant,
                "variant_title": None, "vendor": "Demo Roastery", "tax_lines": [], "discount_allocations": [],
                "selling_plan_id": plan}],
        }

    def _consent(self, c: s.Customer, at: datetime, first: bool) -> dict:
        # Declining at sign-up leaves a customer "not subscribed"; opting out later, "unsubscribed".
        state = c.consent if c.consent == "subscribed" or not first else "not_subscribed"
        return {"customer_id": self.customer_id(c), "email_address": c.email,
                "email_marketing_consent": {"state": state, "opt_in_level": "single_opt_in",
                                            "consent_updated_at": _iso(at)}}

    def inventory(self, plan: s.Plan, available: int, at: datetime) -> Webhook:
        """inventory_levels/update of the plan's product: it names the stock-keeping item only."""
        item = self.inventory_item(plan)
        payload = {"inventory_item_id": item, "location_id": 24_826_418, "available": available,
                   "updated_at": _iso(at),
                   "admin_graphql_api_id": f"gid://shopify/InventoryLevel/24826418?inventory_item_id={item}"}
        return self.sign("inventory_levels/update", payload, at)

    def payloads(self, h: s.Happening) -> list[tuple[str, dict]]:
        """(topic, payload) of each webhook Shopify sends the hub for `h`, in the order it sends them."""
        c, at = h.customer, h.at
        if h.kind == s.SIGNUP:
            order = self._order(c, at, first=True)
            out = [] if h.detail.get("returning") else [("customers/create", self._customer(c, at))]
            if c.consent and not h.detail.get("returning"):
                out.append(("customers_email_marketing_consent/update", self._consent(c, at, first=True)))
            return out + [("orders/create", order), ("orders/paid", order)]
        if h.kind in (s.RENEWAL, s.PAYMENT_RECOVERED):
            return [("orders/paid", self._order(c, at, first=False))]
        if h.kind == s.CONSENT_CHANGED:
            return [("customers_email_marketing_consent/update", self._consent(c, at, first=False))]
        return []  # failed attempts, plan changes and cancellations reach the subscription app only

    def webhooks(self, h: s.Happening) -> list[Webhook]:
        """The signed webhooks of `h`."""
        return [self.sign(topic, payload, h.at) for topic, payload in self.payloads(h)]

    def sign(self, topic: str, payload: dict, at: datetime) -> Webhook:
        """Headers as Shopify sends them: base64 HMAC-SHA256 of the body, topic, ids, time."""
        body = json.dumps(payload).encode()
        digest = base64.b64encode(hmac.new(self.secret.encode(), body, hashlib.sha256).digest()).decode()
        n = self._next()
        headers = {"Content-Type": "application/json", "X-Shopify-Hmac-Sha256": digest,
                   "X-Shopify-Topic": topic, "X-Shopify-Shop-Domain": self.shop,
                   "X-Shopify-API-Version": API_VERSION_SHOPIFY,
                   "X-Shopify-Webhook-Id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"demo-webhook-{n}")),
                   "X-Shopify-Event-Id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"demo-event-{n}")),
                   "X-Shopify-Triggered-At": _iso(at)}
        return Webhook(self.source, topic, body, headers)


# Decline → Recharge charge (error_type, error). The published samples show only
# CUSTOMER_NEEDS_TO_UPDATE_CARD (tests/samples/recharge/charge_failed.json); other declines carry
# the processor's message alone here.
_RECHARGE_ERRORS = {"insufficient_funds": (None, "Your card has insufficient funds."),
                    "card_declined": (None, "Your card was declined."),
                    "do_not_honor": (None, "Your card was declined."),
                    "expired_card": ("CUSTOMER_NEEDS_TO_UPDATE_CARD", "Your card has expired.")}


class RechargeWebhooks:
    """Recharge (API 2021-11) for a Shopify store running it: customers, subscriptions and charges.

    Bodies are the REST objects wrapped in their resource key; one charge is one billing cycle,
    its retries keep its id and count in `charge_attempts`, with `retry_date` the next try
    (https://docs.getrecharge.com/docs/webhooks-overview, https://docs.rechargepayments.com/docs/charges).
    """

    source = "recharge"
    trials = False

    def __init__(self, secret: str):
        self.secret = secret

    @staticmethod
    def customer_id(c: s.Customer) -> int:
        return 90_000_000 + c.number

    @staticmethod
    def subscription_id(c: s.Customer) -> int:
        return 31_000_000 + c.number * 10 + c.subscription

    def charge_id(self, c: s.Customer, cycle: int) -> int:
        return 580_000_000 + self.subscription_id(c) * 100 + cycle

    def _external(self, c: s.Customer) -> dict:
        product, variant, _ = ShopifyWebhooks.product(c.plan)
        return {"external_product_id": {"ecommerce": str(product)}, "external_variant_id": {"ecommerce": str(variant)}}

    def _customer(self, c: s.Customer, at: datetime) -> dict:
        return {"id": self.customer_id(c), "email": c.email, "first_name": c.first_name, "last_name": c.last_name,
                "phone": c.phone, "created_at": _iso(c.joined_at), "updated_at": _iso(at),
                "external_customer_id": {"ecommerce": str(7_200_000_000 + c.number)},
                "has_payment_method_in_dunning": c.status == "past_due", "subscriptions_active_count": 1}

    def _subscription(self, c: s.Customer, at: datetime, status: str | None = None) -> dict:
        status = status or ("cancelled" if c.status == "canceled" else "active")
        unit = "year" if c.plan.interval == "year" else "month"
        return {"id": self.subscription_id(c), "address_id": 2_000_000 + c.number,
                "customer_id": self.customer_id(c), "created_at": _iso(c.period_start or at),
                "updated_at": _iso(at), "status": status, "product_title": c.plan.name, "variant_title": None,
                "price": _decimal(c.plan.amount), "quantity": 1, "presentment_currency": s.CURRENCY,
                "order_interval_unit": unit, "order_interval_frequency": c.plan.interval_count,
                "charge_interval_frequency": c.plan.interval_count, "is_prepaid": False,
                "next_charge_scheduled_at": _iso(c.period_end) if status == "active" and c.period_end else None,
                "cancelled_at": _iso(c.canceled_at or at) if status == "cancelled" else None,
                "cancellation_reason": ("max retries reached" if c.failures else "customer cancelled")
                if status == "cancelled" else None, **self._external(c)}

    def _charge(self, c: s.Customer, at: datetime, cycle: int, status: str, attempts: int | None = 1,
                retry: datetime | None = None, decline: str | None = None) -> dict:
        error_type, error = _RECHARGE_ERRORS.get(decline, (None, "Your card was declined.")) if decline \
            else (None, None)
        price = _decimal(c.plan.amount)
        return {"id": self.charge_id(c, cycle), "address_id": 2_000_000 + c.number, "currency": s.CURRENCY,
                "customer": {"id": self.customer_id(c), "email": c.email,
                             "external_customer_id": {"ecommerce": str(7_200_000_000 + c.number)}},
                "billing_address": {"first_name": c.first_name, "last_name": c.last_name, "phone": c.phone},
                "charge_attempts": attempts, "created_at": _iso(at), "updated_at": _iso(at),
                "error": error, "error_type": error_type,
                "external_order_id": {"ecommerce": str(6_400_000_000_000 + self.charge_id(c, cycle))}
                if status == "success" else {"ecommerce": None},
                "line_items": [{"purchase_item_id": self.subscription_id(c), "purchase_item_type": "subscription",
                                "quantity": 1, "title": c.plan.name, "unit_price": price, "total_price": price,
                                **self._external(c)}],
                "processed_at": _iso(at) if status == "success" else None,
                "retry_date": _iso(retry) if retry else None, "scheduled_at": _iso(at)[:10], "status": status,
                "total_price": price, "total_refunds": "0.00", "type": "checkout" if cycle == 0 else "recurring"}

    def payloads(self, h: s.Happening) -> list[tuple[str, dict]]:
        """(topic, body) of each webhook Recharge sends for `h`."""
        c, at = h.customer, h.at
        if h.kind == s.SIGNUP:
            out = [] if h.detail.get("returning") else [("customer/created", {"customer": self._customer(c, at)})]
            return out + [("subscription/created", {"subscription": self._subscription(c, at)}),
                          ("charge/paid", {"charge": self._charge(c, at, c.renewals, "success")})]
        if h.kind in (s.RENEWAL, s.PAYMENT_RECOVERED):
            # A recovered cycle keeps the count its failures left (the paid charge says no more).
            attempts = None if h.kind == s.PAYMENT_RECOVERED else 1
            return [("charge/paid", {"charge": self._charge(c, at, c.renewals, "success", attempts=attempts)}),
                    ("subscription/updated", {"subscription": self._subscription(c, at)})]
        if h.kind == s.PAYMENT_FAILED:
            attempt = h.detail.get("attempt", 1)
            retries = s.Rates().retry_days
            retry = at + timedelta(days=retries[attempt - 1]) if attempt <= len(retries) else None
            return [("charge/failed", {"charge": self._charge(c, at, c.renewals + 1, "error", attempts=attempt,
                                                              retry=retry, decline=h.detail.get("decline"))})]
        if h.kind == s.PLAN_CHANGED:
            return [("subscription/swapped", {"subscription": self._subscription(c, at)})]
        if h.kind == s.CANCEL_REQUESTED:
            # Cancelling in Recharge stops the next charge at once.
            return [("subscription/cancelled", {"subscription": self._subscription(c, at, "cancelled")})]
        if h.kind == s.CANCELED and h.detail.get("reason") != "requested":
            failed = self._charge(c, at, c.renewals + 1, "error", attempts=c.failures, decline="card_declined")
            return [("charge/max_retries_reached", {"charge": failed}),
                    ("subscription/cancelled", {"subscription": self._subscription(c, at)})]
        return []  # Recharge holds no marketing consent

    def webhooks(self, h: s.Happening) -> list[Webhook]:
        return [self.sign(topic, payload) for topic, payload in self.payloads(h)]

    def sign(self, topic: str, payload: dict) -> Webhook:
        """Both signatures Recharge sends: `X-Recharge-Webhook-Signature: t=…,v1=…` (HMAC-SHA256 of
        "t.body", t the real time of sending) and the legacy `X-Recharge-Hmac-Sha256`, SHA-256 hex of
        the client secret followed by the body (https://docs.getrecharge.com/docs/webhooks-overview)."""
        body = json.dumps(payload).encode()
        t = str(int(time.time()))
        timestamped = hmac.new(self.secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
        return Webhook(self.source, topic, body, {
            "Content-Type": "application/json", "X-Recharge-Topic": topic,
            "X-Recharge-Webhook-Signature": f"t={t},v1={timestamped}",
            "X-Recharge-Hmac-Sha256": hashlib.sha256(self.secret.encode() + body).hexdigest()})


class StripeWebhooks:
    """Stripe: customers, Checkout, subscriptions and invoices (no API calls needed)."""

    source = "stripe"
    trials = True

    def __init__(self, secret: str):
        self.secret = secret
        self._serial = 0

    def _next(self) -> int:
        self._serial += 1
        return self._serial

    @staticmethod
    def customer_id(c: s.Customer) -> str:
        return f"cus_demo{c.number:05d}"

    @staticmethod
    def subscription_id(c: s.Customer) -> str:
        return f"sub_demo{c.number:05d}n{c.subscription}"

    @staticmethod
    def invoice_id(c: s.Customer, number: int) -> str:
        return f"in_demo{c.number:05d}n{c.subscription}i{number}"

    def _customer(self, c: s.Customer) -> dict:
        return {"id": self.customer_id(c), "object": "customer", "balance": 0, "created": _ts(c.joined_at),
                "currency": s.CURRENCY.lower(), "default_source": None, "delinquent": False,
                "description": None, "email": c.email, "invoice_prefix": f"DEMO{c.number:04d}",
                "invoice_settings": {"custom_fields": None, "default_payment_method": f"pm_demo{c.number:05d}",
                                     "footer": None, "rendering_options": None},
                "livemode": False, "metadata": {}, "name": c.name, "phone": c.phone,
                "preferred_locales": [], "shipping": None, "tax_exempt": "none", "test_clock": None}

    def _price(self, plan: s.Plan) -> dict:
        return {"id": f"price_demo_{plan.code}", "object": "price", "active": True,
                "billing_scheme": "per_unit", "currency": s.CURRENCY.lower(), "livemode": False,
                "lookup_key": plan.code, "metadata": {}, "nickname": plan.name,
                "product": f"prod_demo_{plan.code}",
                "recurring": {"interval": plan.interval, "interval_count": plan.interval_count,
                              "meter": None, "usage_type": "licensed"},
                "tax_behavior": "unspecified", "type": "recurring", "unit_amount": plan.amount,
                "unit_amount_decimal": str(plan.amount)}

    def _items(self, c: s.Customer) -> dict:
        sub = self.subscription_id(c)
        return {"object": "list", "has_more": False, "total_count": 1,
                "url": f"/v1/subscription_items?subscription={sub}",
                "data": [{"id": f"si_demo{c.number:05d}n{c.subscription}", "object": "subscription_item",
                          "created": _ts(c.joined_at), "current_period_start": _ts(c.period_start),
                          "current_period_end": _ts(c.period_end), "metadata": {},
                          "price": self._price(c.plan), "quantity": 1, "subscription": sub,
                          "tax_rates": []}]}

    def _subscription(self, c: s.Customer, at: datetime) -> dict:
        ended = c.status == "canceled"
        return {"id": self.subscription_id(c), "object": "subscription",
                "billing_cycle_anchor": _ts(c.period_start),
                "cancel_at": _ts(c.period_end) if c.cancel_at_period_end else None,
                "cancel_at_period_end": c.cancel_at_period_end,
                "canceled_at": _ts(c.canceled_at or (at if c.cancel_at_period_end else None)),
                "cancellation_details": {"comment": None, "feedback": None,
                                         "reason": "payment_failed" if ended and c.failures else
                                         "cancellation_requested" if ended or c.cancel_at_period_end else None},
                "collection_method": "charge_automatically", "created": _ts(at),
                "currency": s.CURRENCY.lower(), "customer": self.customer_id(c),
                "default_payment_method": f"pm_demo{c.number:05d}", "ended_at": _ts(at) if ended else None,
                "items": self._items(c), "latest_invoice": self.invoice_id(c, max(1, c.orders)),
                "livemode": False, "metadata": {}, "pause_collection": None,
                "start_date": _ts(c.joined_at), "status": c.status,
                "trial_end": _ts(c.trial_end), "trial_start": _ts(c.period_start) if c.trial_end else None}

    def _invoice(self, c: s.Customer, at: datetime, paid: bool, attempt: int = 1,
                 next_attempt: datetime | None = None) -> dict:
        number = c.orders if paid else c.orders + 1
        invoice = self.invoice_id(c, number)
        start, end = (c.period_start, c.period_end) if paid else (c.period_end, None)
        amount = c.plan.amount
        return {"id": invoice, "object": "invoice", "account_country": "US", "account_name": "Demo Roastery",
                "amount_due": amount, "amount_paid": amount if paid else 0,
                "amount_remaining": 0 if paid else amount, "attempt_count": attempt, "attempted": True,
                "billing_reason": "subscription_create" if number == 1 else "subscription_cycle",
                "collection_method": "charge_automatically", "created": _ts(at),
                "currency": s.CURRENCY.lower(), "customer": self.customer_id(c),
                "customer_email": c.email, "customer_name": c.name, "customer_phone": c.phone,
                "due_date": None, "hosted_invoice_url": f"https://invoice.stripe.com/i/demo/{invoice}",
                "last_finalization_error": None,
                "lines": {"object": "list", "has_more": False, "total_count": 1,
                          "url": f"/v1/invoices/{invoice}/lines",
                          "data": [{"id": f"il_{invoice}", "object": "line_item", "amount": amount,
                                    "currency": s.CURRENCY.lower(), "description": f"1 × {c.plan.name}",
                                    "period": {"start": _ts(start), "end": _ts(end or start)},
                                    "pricing": {"price_details": {"price": f"price_demo_{c.plan.code}",
                                                                  "product": f"prod_demo_{c.plan.code}"},
                                                "type": "price_details",
                                                "unit_amount_decimal": str(amount)},
                                    "quantity": 1}]},
                "livemode": False, "metadata": {}, "next_payment_attempt": _ts(next_attempt),
                "number": f"DEMO{c.number:04d}-{number:04d}",
                "parent": {"type": "subscription_details", "quote_details": None,
                           "subscription_details": {"metadata": {}, "subscription": self.subscription_id(c)}},
                "period_start": _ts(start), "period_end": _ts(end or start),
                "status": "paid" if paid else "open",
                "status_transitions": {"finalized_at": _ts(at), "marked_uncollectible_at": None,
                                       "paid_at": _ts(at) if paid else None, "voided_at": None},
                "subtotal": amount, "total": amount}

    def _checkout(self, c: s.Customer, at: datetime, paid: bool, first: bool) -> dict:
        consent = {"subscribed": "opt_in", "unsubscribed": "opt_out"}.get(c.consent) if first else None
        total = c.plan.amount if paid else 0
        return {"id": f"cs_demo{c.number:05d}n{c.subscription}", "object": "checkout.session",
                "amount_subtotal": total, "amount_total": total, "client_reference_id": None,
                "consent": {"promotions": consent, "terms_of_service": None} if consent else None,
                "consent_collection": {"promotions": "auto", "terms_of_service": "none"} if first else None,
                "created": _ts(at), "currency": s.CURRENCY.lower(), "customer": self.customer_id(c),
                "customer_details": {"address": {"country": "CA"}, "email": c.email, "name": c.name,
                                     "phone": c.phone, "tax_exempt": "none", "tax_ids": []},
                "customer_email": None, "livemode": False, "metadata": {}, "mode": "subscription",
                "payment_intent": None,
                "payment_status": "paid" if paid else "no_payment_required", "status": "complete",
                "subscription": self.subscription_id(c)}

    def _event(self, kind: str, obj: dict, at: datetime, previous: dict | None = None) -> tuple[str, dict]:
        data = {"object": obj}
        if previous is not None:
            data["previous_attributes"] = previous
        n = self._next()
        return kind, {"id": f"evt_demo{n:07d}", "object": "event", "api_version": API_VERSION_STRIPE,
                      "created": _ts(at), "data": data, "livemode": False, "pending_webhooks": 1,
                      "request": {"id": None, "idempotency_key": None}, "type": kind}

    def payloads(self, h: s.Happening) -> list[tuple[str, dict]]:
        """(type, event) of each webhook Stripe sends for `h`."""
        c, at, e = h.customer, h.at, self._event
        sub = self._subscription(c, at)
        if h.kind == s.SIGNUP:
            first = not h.detail.get("returning")
            paid = c.status != "trialing"
            out = [e("customer.created", self._customer(c), at)] if first else []
            out += [e("checkout.session.completed", self._checkout(c, at, paid, first), at),
                    e("customer.subscription.created", sub, at)]
            if paid:
                out.append(e("invoice.paid", self._invoice(c, at, paid=True), at))
            return out
        if h.kind == s.TRIAL_ENDING:
            return [e("customer.subscription.trial_will_end", sub, at)]
        if h.kind in (s.RENEWAL, s.PAYMENT_RECOVERED):
            previous = {"status": h.detail["was"]} if h.detail.get("was") != "active" else {
                "items": {"data": [{"current_period_start": None}]}}
            return [e("invoice.paid", self._invoice(c, at, paid=True, attempt=1 + (h.kind == s.PAYMENT_RECOVERED)), at),
                    e("customer.subscription.updated", sub, at, previous)]
        if h.kind == s.PAYMENT_FAILED:
            attempt = h.detail.get("attempt", 1)
            retries = s.Rates().retry_days
            following = at + timedelta(days=retries[attempt - 1]) if attempt <= len(retries) else None
            out = [e("invoice.payment_failed", self._invoice(c, at, paid=False, attempt=attempt,
                                                             next_attempt=following), at)]
            if attempt == 1:
                out.append(e("customer.subscription.updated", sub, at, {"status": "active"}))
            return out
        if h.kind == s.PLAN_CHANGED:
            old = h.detail["previous"]
            return [e("customer.subscription.updated", sub, at,
                      {"items": {"data": [{"price": self._price(old)}]}})]
        if h.kind == s.CANCEL_REQUESTED:
            return [e("customer.subscription.updated", sub, at,
                      {"cancel_at_period_end": False, "cancel_at": None, "canceled_at": None})]
        if h.kind == s.CANCELED:
            return [e("customer.subscription.deleted", sub, at)]
        return []  # Stripe sends nothing when consent changes elsewhere

    def webhooks(self, h: s.Happening) -> list[Webhook]:
        return [self.sign(topic, payload) for topic, payload in self.payloads(h)]

    def sign(self, topic: str, payload: dict) -> Webhook:
        """`Stripe-Signature: t=…,v1=…`: HMAC-SHA256 of "t.body", t the real time of sending."""
        body = json.dumps(payload).encode()
        t = int(time.time())
        signature = hmac.new(self.secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        return Webhook(self.source, topic, body,
                       {"Content-Type": "application/json", "Stripe-Signature": f"t={t},v1={signature}"})


PLATFORMS = {"shopify": ShopifyWebhooks, "recharge": RechargeWebhooks, "stripe": StripeWebhooks}
