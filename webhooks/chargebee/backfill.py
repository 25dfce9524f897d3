"""Listing Chargebee for `hub backfill` and reconciliation (hub/ops/backfill.py drives it).

Chargebee's list APIs (`GET /api/v2/customers|subscriptions|invoices`, HTTP basic auth
with the site's API key as user) page with `limit` (at most 100) and `offset`: each
answer's `next_offset` is the cursor of the next page, absent on the last. Lists are
sorted by `updated_at` and filtered with `updated_at[after]`, which is also how
reconciliation asks for what changed since its last run.

Each listed resource is wrapped as the event the webhook would have sent —
`customer_changed`, `subscription_changed` / `subscription_cancelled`,
`payment_succeeded` / `payment_failed` — with `content` holding the resources the way
webhook events hold them, so webhooks.chargebee.webhook normalizes it unchanged. The dedupe id
is (resource id, resource_version), Chargebee's millisecond version of the resource.

Rate limit: Chargebee allows 150 API calls a minute on test sites and Starter plans
(1,000 on Performance, 3,500 on Enterprise; CHARGEBEE_API_RATE), and answers 429 above it.
The limit is the site's, shared with the merchant's own integrations, and a live site that
goes over is flagged and may have its reads blocked
(https://www.chargebee.com/docs/billing/2.0/kb/platform/what-are-the-chargebee-api-limits):
the hub takes half of it (SITE_SHARE).
"""
from __future__ import annotations

import time
from datetime import datetime

import requests

from hub.values import retry_after, utc
from webhooks.chargebee.webhook import NAME
from webhooks.listing import Item, Lister, Pacer, Page, dedupe_id

PAGE_SIZE = 100
RETRIES = 6
SITE_SHARE = 0.5  # of the site's API limit, the rest left to the merchant's own integrations


def problem(settings) -> str | None:
    if not settings.CHARGEBEE_API_KEY or not (settings.CHARGEBEE_SITE or settings.CHARGEBEE_API_BASE):
        return "not configured (set CHARGEBEE_SITE and CHARGEBEE_API_KEY)"
    return None


def base_url(settings) -> str:
    return (settings.CHARGEBEE_API_BASE or f"https://{settings.CHARGEBEE_SITE}.chargebee.com").rstrip("/")


class Client:
    """One run's Chargebee client: a requests session with basic auth and a pacer."""

    def __init__(self, settings, pacer: Pacer | None = None):
        self.base = base_url(settings) + "/api/v2"
        self.http = requests.Session()
        self.http.auth = (settings.CHARGEBEE_API_KEY, "")
        per_minute = settings.CHARGEBEE_API_RATE * SITE_SHARE
        # A small burst only: Chargebee counts per minute and blocks a test site that goes over.
        self.pacer = pacer or Pacer(per_minute / 60.0, burst=min(10, per_minute))

    def page(self, stream: str, cursor: dict | None, since: datetime | None) -> Page:
        resource, wrap = STREAMS[stream]
        params = {"limit": PAGE_SIZE, "sort_by[asc]": "updated_at"}
        if since is not None:
            params["updated_at[after]"] = int(since.timestamp())
        if cursor and cursor.get("offset"):
            params["offset"] = cursor["offset"]
        answer = self._get(f"{self.base}/{resource}", params)
        items = [item for item in (wrap(entry) for entry in answer.get("list") or []) if item]
        following = answer.get("next_offset")
        return Page(items, {"offset": following} if following else None)

    def _get(self, url: str, params: dict) -> dict:
        for attempt in range(RETRIES + 1):
            self.pacer.take()
            try:
                response = self.http.get(url, params=params, timeout=30)
            except requests.RequestException:
                if attempt == RETRIES:
                    raise
                time.sleep(min(30.0, 0.5 * 2 ** attempt))
                continue
            if response.status_code == 429 and attempt < RETRIES:
                self.pacer.hold(retry_after(response.headers, 5.0 * (attempt + 1)))
                continue
            if response.status_code >= 500 and attempt < RETRIES:
                time.sleep(min(30.0, 0.5 * 2 ** attempt))
                continue
            if response.status_code != 200:
                raise ChargebeeAPIError(f"Chargebee answered HTTP {response.status_code} for {url}: "
                                        f"{response.text[:300]}")
            return response.json()
        raise AssertionError("unreachable")


class ChargebeeAPIError(Exception):
    """Chargebee refused a list request (bad key, unknown site); the message says which."""


# --- wrapping resources as the events webhooks carry -----------------------------------------

def _version(resource: dict):
    return resource.get("resource_version") or resource.get("updated_at")


def _event(kind: str, event_type: str, resource: dict, content: dict, model_kind: str) -> Item:
    event_id = dedupe_id(f"chargebee-{kind}", resource["id"], _version(resource))
    updated = resource.get("updated_at")
    payload = {"id": event_id, "object": "event", "api_version": "v2", "event_type": event_type,
               "occurred_at": updated, "source": "backfill", "content": content}
    return Item(event_id=event_id, topic=event_type, payload=payload, updated_at=utc(updated),
                kind=model_kind, source_id=resource["id"])


def customer_item(entry: dict) -> Item:
    customer = entry["customer"]
    return _event("customer", "customer_changed", customer, {"customer": customer}, "customer")


def subscription_item(entry: dict) -> Item:
    sub = entry["subscription"]
    topic = "subscription_cancelled" if sub.get("status") == "cancelled" else "subscription_changed"
    content = {k: entry[k] for k in ("subscription", "customer", "card") if entry.get(k)}
    return _event("subscription", topic, sub, content, "subscription")


def invoice_item(entry: dict) -> Item | None:
    invoice = entry["invoice"]
    status = invoice.get("status")
    if status == "paid":
        topic = "payment_succeeded"
    elif status in ("payment_due", "not_paid") and invoice.get("dunning_attempts"):
        topic = "payment_failed"
    else:
        return None  # pending, posted, voided, or never attempted: nothing the hub tracks
    return _event("invoice", topic, invoice, {"invoice": invoice}, "payment")


# stream -> (list resource, wrapper)
STREAMS = {
    "customers": ("customers", customer_item),
    "subscriptions": ("subscriptions", subscription_item),
    "invoices": ("invoices", invoice_item),
}

LISTER = Lister(source=NAME, streams=("customers", "subscriptions", "invoices"),
                changes=("customers", "subscriptions", "invoices"), problem=problem, client=Client)
