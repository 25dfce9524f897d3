"""Real payload samples: tests/fixtures (published by others, with their licences) and
tests/samples (ours)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parent / "fixtures"
OURS = Path(__file__).resolve().parent / "samples"


def load_sample(path: str) -> dict:
    """A sample by path: `shared:stripe/pay/invoice.json` or `shopify/orders_create.json` (ours)."""
    if path.startswith("shared:"):
        return json.loads((SHARED / path.removeprefix("shared:")).read_text())
    return json.loads((OURS / path).read_text())


def stripe_resource(name: str) -> dict:
    """One of Stripe's published example objects (fixtures3.json `resources`)."""
    return json.loads((SHARED / "stripe" / "fixtures3.json").read_text())["resources"][name]


def stripe_schedule(subscription_id: str, customer_id: str, phases: list[tuple], quantity: int = 1,
                    under_way: int = 0, **fields) -> dict:
    """Stripe's published example subscription schedule (fixtures3.json) running `subscription_id`:
    a phase per (start, end, price, discounts), its price an id as a webhook carries it or a
    price object as `expand[]=phases.items.price` gives it; phase `under_way` under way; `fields`
    over all that (status, end_behavior, subscription once released)."""
    schedule = stripe_resource("subscription_schedule")  # read afresh: a copy of its own
    base = {key: value for key, value in schedule["phases"][0].items() if key not in ("items", "plan")}
    built = [{**base, "start_date": start, "end_date": end, "currency": "usd", "discounts": discounts,
              "items": [{"price": price, "quantity": quantity, "discounts": [], "metadata": {}, "tax_rates": []}]}
             for start, end, price, discounts in phases]
    schedule.update({"subscription": subscription_id, "customer": customer_id, "status": "active",
                     "end_behavior": "release", "released_subscription": None, "phases": built,
                     "current_phase": {key: built[under_way][key] for key in ("start_date", "end_date")}, **fields})
    return schedule


def stripe_event(event_type: str, obj: dict, event_id: str = "evt_test_1", created: int | None = None,
                 previous_attributes: dict | None = None) -> dict:
    """Wrap an object as a Stripe event of `event_type`."""
    data = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {"id": event_id, "object": "event", "api_version": "2025-03-31.basil",
            "type": event_type, "created": created or int(time.time()), "livemode": False,
            "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None}, "data": data}


def stripe_chargeback(customer: str, created: int) -> tuple[dict, dict, dict]:
    """A 45.00 USD Checkout purchase by `customer` (its checkout.session.completed event), its
    charge `ch_disputed` as GET /v1/charges/:id shows it, and the chargeback's dispute, whose
    funds were withdrawn (it names the charge only)."""
    session = {**load_sample("shared:stripe/pay/checkout.session.completed.json")["object"],
               "mode": "payment", "subscription": None, "payment_intent": "pi_disputed",
               "payment_status": "paid", "amount_total": 4500, "customer": customer}
    charge = {**load_sample("shared:stripe/pay/charge.refunded.json")["object"], "id": "ch_disputed",
              "payment_intent": "pi_disputed", "customer": customer, "amount_refunded": 0}
    dispute = {**load_sample("shared:stripe/fixtures3.json")["resources"]["dispute"], "id": "dp_1",
               "charge": "ch_disputed", "amount": 4500, "status": "needs_response",
               "balance_transactions": [{"amount": -4500, "currency": "usd", "fee": 1500}]}
    return stripe_event("checkout.session.completed", session, event_id="evt_paid", created=created), charge, dispute


def sign_stripe(body: bytes, secret: str, timestamp: int | None = None) -> dict:
    """Headers Stripe would send for `body`."""
    t = int(time.time()) if timestamp is None else timestamp
    sig = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={t},v1={sig}", "Content-Type": "application/json"}


def sign_shopify(body: bytes, secret: str, topic: str, webhook_id: str = "wh-1",
                 event_id: str | None = None, shop: str = "example.myshopify.com",
                 api_version: str = "2025-10", triggered_at: str = "2026-11-01T12:00:00Z") -> dict:
    """Headers Shopify would send for `body` on `topic`."""
    digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    headers = {"X-Shopify-Hmac-Sha256": digest, "X-Shopify-Topic": topic,
               "X-Shopify-Shop-Domain": shop, "X-Shopify-API-Version": api_version,
               "X-Shopify-Webhook-Id": webhook_id, "X-Shopify-Triggered-At": triggered_at,
               "Content-Type": "application/json"}
    if event_id:
        headers["X-Shopify-Event-Id"] = event_id
    return headers


def sign_recharge(body: bytes, secret: str, topic: str | None) -> dict:
    """Headers Recharge sends: its legacy signature, SHA-256 hex of client secret + raw body
    (https://docs.getrecharge.com/docs/webhooks-overview), and the topic."""
    return {"X-Recharge-Hmac-Sha256": hashlib.sha256(secret.encode() + body).hexdigest(),
            "X-Recharge-Topic": topic or "", "Content-Type": "application/json"}


def chargebee_auth(user: str, password: str) -> dict:
    """Basic-auth headers Chargebee sends."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


SECRETS = {
    "SHOPIFY_WEBHOOK_SECRET": "shpss_test_secret",
    "STRIPE_WEBHOOK_SECRET": "whsec_test_secret",
    "CHARGEBEE_WEBHOOK_USER": "chargebee",
    "CHARGEBEE_WEBHOOK_PASSWORD": "cb-test-password",
    "RECHARGE_WEBHOOK_SECRET": "recharge-client-secret",
    "HUB_API_TOKEN": "test-api-token",
    "HUB_SECRET_KEY": "test-session-key",
}
# Tests ask for a drain on every webhook so a burst worker sees it at once; the
# debounced path of production has its own test.
TEST_SETTINGS = {**SECRETS, "HUB_DRAIN_DEBOUNCE_MS": 0}
API_HEADERS = {"Authorization": f"Bearer {SECRETS['HUB_API_TOKEN']}"}
# The contract of Shopify's subscription_contracts/create sample: a Shopify stand-in answers
# it only once the store holds it (FakeShopifyAdmin.hold).
SAMPLE_CONTRACT = "gid://shopify/SubscriptionContract/402440842"


def signed(source: str, payload: dict | bytes, topic: str | None = None, **kwargs) -> tuple[dict, bytes]:
    """(headers, body) of a webhook from `source` signed with the test secrets."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    if source == "stripe":
        return sign_stripe(body, SECRETS["STRIPE_WEBHOOK_SECRET"], **kwargs), body
    if source == "shopify":
        return sign_shopify(body, SECRETS["SHOPIFY_WEBHOOK_SECRET"], topic, **kwargs), body
    if source == "chargebee":
        return chargebee_auth(SECRETS["CHARGEBEE_WEBHOOK_USER"], SECRETS["CHARGEBEE_WEBHOOK_PASSWORD"]), body
    if source == "recharge":
        return sign_recharge(body, SECRETS["RECHARGE_WEBHOOK_SECRET"], topic), body
    raise ValueError(source)


def post(client, source: str, payload: dict | bytes, topic: str | None = None, **kwargs):
    """POST a signed webhook through the Flask test client."""
    headers, body = signed(source, payload, topic, **kwargs)
    return client.post(f"/webhooks/{source}", data=body, headers=headers)
