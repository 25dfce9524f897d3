"""Listing Stripe for `hub backfill` and reconciliation (hub/ops/backfill.py drives it).

Backfill walks customers, subscriptions (status "all", so canceled ones come too) and
invoices, 100 a page with `starting_after`, and wraps each object as the event the
webhook would have carried: `customer.updated`, `customer.subscription.updated` /
`.deleted`, `invoice.paid` / `invoice.payment_failed`. Subscriptions and invoices are
listed with `expand[]=data.customer`, so the customer's email comes with them; ENRICH
fetches only a failed invoice's payments (the decline is on their payment intent).

Stripe objects have no updated-at: a wrapped event is dated by the latest time the object
itself names (created, period start, canceled, paid), so any real webhook about a later
change is newer and wins, and the dedupe id carries a hash of the object (same state,
same id). Reconciliation reads the Events API instead (`created[gte]`, Stripe keeps 30
days; webhooks are retried for 3): those are the very events the webhooks carry, under
their own ids, so an event a webhook already stored is not stored again.

Rate limit: 100 read requests per second in live mode, 25 in a sandbox (test keys);
a 429 waits as long as Retry-After says.
"""
from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime

import stripe

from hub.values import retry_after, utc
from webhooks.listing import Item, Lister, Pacer, Page, dedupe_id
from webhooks.stripe.webhook import NAME, PENDING_UPDATE_TOPICS, SCHEDULE_TOPICS, TOPICS

PAGE_SIZE = 100
LIVE_RATE, SANDBOX_RATE = 100, 25
RETRIES = 6


def problem(settings) -> str | None:
    return None if settings.STRIPE_API_KEY else "not configured (set STRIPE_API_KEY)"


def rate_for(api_key: str) -> int:
    """Stripe's documented read limit for the key's mode."""
    return SANDBOX_RATE if "_test_" in api_key else LIVE_RATE


class Client:
    """One run's Stripe client: a StripeClient (base URL from STRIPE_API_BASE) and a pacer."""

    def __init__(self, settings, pacer: Pacer | None = None):
        base = {"api": settings.STRIPE_API_BASE.rstrip("/")} if settings.STRIPE_API_BASE else None
        # Retries are ours (they wait on the shared pacer); the library's would not.
        self.stripe = stripe.StripeClient(settings.STRIPE_API_KEY, base_addresses=base,
                                          max_network_retries=0,
                                          http_client=stripe.RequestsClient(timeout=30))
        rate = rate_for(settings.STRIPE_API_KEY)
        self.pacer = pacer or Pacer(rate, burst=rate)

    def page(self, stream: str, cursor: dict | None, since: datetime | None) -> Page:
        resource, params, wrap = STREAMS[stream]
        params = {**params, "limit": PAGE_SIZE}
        if since is not None:
            params["created"] = {"gte": int(since.timestamp())}
        if cursor and cursor.get("starting_after"):
            params["starting_after"] = cursor["starting_after"]
        answer = self._call(getattr(self.stripe.v1, resource).list, params)
        objects = [o.to_dict() for o in answer.data]
        items = [item for item in (wrap(o) for o in objects) if item is not None]
        more = bool(answer.has_more) and bool(objects)
        return Page(items, {"starting_after": objects[-1]["id"]} if more else None)

    def _call(self, method, params: dict):
        for attempt in range(RETRIES + 1):
            self.pacer.take()
            try:
                return method(params)
            except stripe.RateLimitError as exc:
                if attempt == RETRIES:
                    raise
                self.pacer.hold(retry_after(exc.headers, 1.0 + attempt))
            except (stripe.APIConnectionError, stripe.APIError) as exc:
                if attempt == RETRIES or (getattr(exc, "http_status", None) or 500) < 500:
                    raise
                time.sleep(min(30.0, 0.5 * 2 ** attempt))


# --- wrapping objects as the events webhooks carry -----------------------------------------

def _version(obj: dict) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _latest(*times) -> int | None:
    known = [int(t) for t in times if isinstance(t, (int, float)) and not isinstance(t, bool)]
    return max(known) if known else None


def _event(kind: str, event_type: str, obj: dict, created: int, model_kind: str) -> Item:
    event_id = dedupe_id(f"stripe-{kind}", obj["id"], _version(obj))
    payload = {"id": event_id, "object": "event", "type": event_type, "created": created,
               "livemode": obj.get("livemode"), "data": {"object": obj}}
    customer = obj.get("customer")
    if isinstance(customer, dict):
        payload["_customer"] = customer  # what webhooks.stripe.webhook.attach_customer would fetch
    return Item(event_id=event_id, topic=event_type, payload=payload, updated_at=utc(created),
                kind=model_kind, source_id=obj["id"])


def customer_item(obj: dict) -> Item:
    return _event("customer", "customer.updated", obj, obj["created"], "customer")


def subscription_item(obj: dict) -> Item:
    items = (obj.get("items") or {}).get("data") or []
    created = _latest(obj.get("created"), obj.get("start_date"), obj.get("current_period_start"),
                      obj.get("canceled_at"), obj.get("ended_at"), obj.get("trial_start"),
                      *[i.get("current_period_start") for i in items])
    ended = obj.get("status") in ("canceled", "incomplete_expired")
    kind = "customer.subscription.deleted" if ended else "customer.subscription.updated"
    return _event("subscription", kind, obj, created, "subscription")


CLOSED = {"void": "invoice.voided", "uncollectible": "invoice.marked_uncollectible"}


def invoice_item(obj: dict) -> Item | None:
    status = obj.get("status")
    transitions = obj.get("status_transitions") or {}
    if status == "paid":
        kind = "invoice.paid"
    elif status == "open" and (obj.get("attempt_count") or 0) > 0:
        kind = "invoice.payment_failed"
    elif status in CLOSED and (obj.get("attempt_count") or 0) > 0:
        kind = CLOSED[status]  # a failed payment Stripe stopped collecting
    else:
        return None  # drafts, open or closed and never attempted: nothing the hub tracks
    created = _latest(obj.get("created"), transitions.get("finalized_at"), transitions.get("paid_at"),
                      obj.get("webhooks_delivered_at"))
    return _event("invoice", kind, obj, created, "payment")


def event_item(event: dict) -> Item:
    """A listed Event stored as the webhook it is (same id: a delivered one is not stored twice)."""
    obj = (event.get("data") or {}).get("object") or {}
    kinds = {"customer": "customer", "subscription": "subscription", "invoice": "payment"}
    return Item(event_id=event["id"], topic=event["type"], payload=event, updated_at=utc(event.get("created")),
                kind=kinds.get(obj.get("object")), source_id=obj.get("id"),
                api_version=event.get("api_version"))


# The Events API takes at most 20 types a call (https://docs.stripe.com/api/events/list).
# Left out, as the others carry what they say: invoice.payment_succeeded (invoice.paid),
# payment_intent.payment_failed (the decline is read through invoice.payment_failed's
# payments), and payment_method.attached/.detached (which card is charged comes with
# customer.updated, its default payment method). A delayed Checkout payment's outcome is
# listed by a call of its own, and so is money given back otherwise than by a refund
# (chargebacks, disputes won back, credit notes credited outside Stripe), and so are the
# changes made ahead of time: the subscription schedules' (what a later phase will bill) and
# pending updates applied or dropped.
PAID_LATER_TYPES = ["checkout.session.async_payment_failed", "checkout.session.async_payment_succeeded"]
GIVEN_BACK_TYPES = ["charge.dispute.funds_reinstated", "charge.dispute.funds_withdrawn",
                    "credit_note.created", "credit_note.voided", "refund.failed", "refund.updated"]
SCHEDULED_TYPES = sorted([*SCHEDULE_TOPICS, *PENDING_UPDATE_TOPICS])
LISTED_TYPES = sorted(set(TOPICS) - {"invoice.payment_succeeded", "payment_intent.payment_failed",
                                     "payment_method.attached", "payment_method.detached",
                                     *PAID_LATER_TYPES, *GIVEN_BACK_TYPES, *SCHEDULED_TYPES})

# stream -> (resource of StripeClient.v1, list params, wrapper)
STREAMS = {
    "customers": ("customers", {}, customer_item),
    "subscriptions": ("subscriptions", {"status": "all", "expand": ["data.customer"]}, subscription_item),
    "invoices": ("invoices", {"expand": ["data.customer"]}, invoice_item),
    "events": ("events", {"types": LISTED_TYPES}, event_item),
    "checkout payments": ("events", {"types": PAID_LATER_TYPES}, event_item),
    "money given back": ("events", {"types": GIVEN_BACK_TYPES}, event_item),
    "changes made ahead": ("events", {"types": SCHEDULED_TYPES}, event_item),
}

LISTER = Lister(source=NAME, streams=("customers", "subscriptions", "invoices"),
                changes=("events", "checkout payments", "money given back", "changes made ahead"),
                problem=problem, client=Client)
