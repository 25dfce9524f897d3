"""Stripe's API for `hub install`: the webhook endpoint that sends the hub its events.

The endpoint's events are the types webhooks.stripe.webhook normalizes (design §4). An endpoint
is the hub's when it points at the hub's URL or carries the hub's metadata mark; a second
run finds it and changes nothing. Stripe shows an endpoint's signing secret only in the
answer that creates it, so the user copies it into STRIPE_WEBHOOK_SECRET then (or from the
Dashboard for an endpoint that already exists).

The endpoint is created on webhooks.stripe.webhook.API_VERSION, the version the normalizers read.
Stripe takes `api_version` only when an endpoint is created (the update call has no such
parameter, https://stripe.com/docs/api/webhook_endpoints/update), so an existing endpoint on
another version is reported, not changed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import stripe

from webhooks.stripe.webhook import API_VERSION, TOPICS

# Marks the endpoint the hub made, so a changed HUB_BASE_URL updates it instead of adding one.
METADATA_MARK = {"made_by": "subscription-hub"}


def client(settings) -> stripe.StripeClient:
    """A StripeClient for STRIPE_API_KEY (and STRIPE_API_BASE, a stand-in in tests); no retries."""
    options = {"base_addresses": {"api": settings.STRIPE_API_BASE.rstrip("/")}} \
        if settings.STRIPE_API_BASE else {}
    return stripe.StripeClient(settings.STRIPE_API_KEY, max_network_retries=0, **options)


def event_types() -> list[str]:
    """The Stripe event types the hub handles (webhooks.stripe.webhook.TOPICS), sorted."""
    return sorted(TOPICS)


@dataclass
class EndpointChange:
    """What registration did: "created", "updated" or "unchanged", and with which endpoint."""

    action: str
    endpoint_id: str
    secret: str | None = None  # only for a created endpoint: Stripe never shows it again
    changed: list[str] = field(default_factory=list)  # what an update changed
    api_version: str | None = None  # what the endpoint's events are rendered in (None: account default)


def version_note(endpoint_version: str | None) -> str | None:
    """What to tell the user when the endpoint's events come in another API version than the
    one the hub reads; None when they match."""
    if endpoint_version == API_VERSION:
        return None
    sent = f"API version {endpoint_version}" if endpoint_version else "the account's default API version"
    return (f"its events come in {sent}, not {API_VERSION} that the hub is written for; Stripe sets "
            "an endpoint's version only when it is made: delete the endpoint (Dashboard → Developers → "
            "Webhooks) and run `hub install` to make it again on that version")


def plan_endpoint(endpoints: list[dict], url: str, events: list[str]) -> tuple[str, dict | None, dict]:
    """("create" | "update" | "unchanged", the hub's endpoint or None, parameters to send) (pure)."""
    ours = next((e for e in endpoints if e.get("url") == url), None) or next(
        (e for e in endpoints if (e.get("metadata") or {}).get("made_by") == METADATA_MARK["made_by"]), None)
    if ours is None:
        return "create", None, {"url": url, "enabled_events": events, "metadata": METADATA_MARK,
                                "api_version": API_VERSION, "description": "Subscription hub (hub install)"}
    changes: dict = {}
    if ours.get("url") != url:
        changes["url"] = url
    enabled = list(ours.get("enabled_events") or [])
    if "*" not in enabled and not set(events) <= set(enabled):
        changes["enabled_events"] = sorted(set(enabled) | set(events))  # keep what the user added
    if ours.get("status") == "disabled":
        changes["disabled"] = False
    return ("update" if changes else "unchanged"), ours, changes


def register_endpoint(settings, url: str) -> EndpointChange:
    """Create or fix the hub's webhook endpoint; raises stripe.StripeError (401, 403, …)."""
    api = client(settings)
    endpoints = [e.to_dict() for e in api.v1.webhook_endpoints.list({"limit": 100}).auto_paging_iter()]
    action, ours, params = plan_endpoint(endpoints, url, event_types())
    if action == "create":
        made = api.v1.webhook_endpoints.create(params).to_dict()
        return EndpointChange("created", made["id"], secret=made.get("secret"), api_version=made.get("api_version"))
    if action == "update":
        api.v1.webhook_endpoints.update(ours["id"], params)
        return EndpointChange("updated", ours["id"], changed=sorted(params), api_version=ours.get("api_version"))
    return EndpointChange("unchanged", ours["id"], api_version=ours.get("api_version"))
