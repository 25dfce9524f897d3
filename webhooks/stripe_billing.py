"""Stripe calls of the rule layer, through the official SDK: update-payment links (billing
portal sessions) and, in dunning mode `orchestrate`, paying an open invoice now.

Registered in hub.rules.platforms under "stripe". Tests point STRIPE_API_BASE at the
loopback stand-in of webhooks/standins/stripe_billing.py.
"""
from __future__ import annotations

import stripe

from hub.rules import platforms

NAME = "stripe"


def is_configured(settings) -> bool:
    return bool(settings.STRIPE_API_KEY)


def client(settings) -> stripe.StripeClient:
    """A client of its own (no module-global api_key/api_base shared with other code)."""
    options = {"base_addresses": {"api": settings.STRIPE_API_BASE.rstrip("/")}} if settings.STRIPE_API_BASE else {}
    # Retries of the SDK reuse one idempotency key, so a retried call is still one call.
    return stripe.StripeClient(settings.STRIPE_API_KEY, max_network_retries=2, **options)


def billing_portal_url(settings, customer_id: str) -> str | None:
    """A billing-portal session for the customer: the page where they replace their card."""
    if not is_configured(settings):
        return None
    params = {"customer": customer_id}
    if settings.HUB_BILLING_RETURN_URL:
        params["return_url"] = settings.HUB_BILLING_RETURN_URL
    return client(settings).v1.billing_portal.sessions.create(params).url


def pay_invoice(settings, payment, idempotency_key: str) -> None:
    """Ask Stripe to attempt the open invoice now (Invoice.pay); one attempt per key."""
    if not is_configured(settings):
        raise RuntimeError("dunning mode is orchestrate but STRIPE_API_KEY is empty")
    client(settings).v1.invoices.pay(payment.source_id, options={"idempotency_key": idempotency_key})


platforms.LINKS[NAME] = billing_portal_url
platforms.RETRY[NAME] = pay_invoice
