"""Stripe calls of the rule layer, through the official SDK: the page behind a hub link
(a billing portal session, made at the click) and, in dunning mode `orchestrate`, paying an open invoice now.

Declared in webhooks.stripe.SOURCE. Tests point STRIPE_API_BASE at the
loopback stand-in of standins/stripe_billing.py.
"""
from __future__ import annotations

import stripe

from hub.errors import ChargeDeclined, RetryLater
from hub.models.link import CANCEL, MANAGE_SUBSCRIPTION, UPDATE_PAYMENT
from webhooks.source import RetrySetup
from webhooks.stripe.webhook import hard_decline

# New Stripe accounts have Smart Retries on ("We enable Smart Retries by default for new
# Stripe accounts", https://docs.stripe.com/billing/revenue-recovery/smart-retries), and
# an invoice they will retry names the time in next_payment_attempt.
OWN_RETRIES = "Billing → Revenue recovery → Retries"


def is_configured(settings) -> bool:
    return bool(settings.STRIPE_API_KEY)


def client(settings) -> stripe.StripeClient:
    """A client of its own (no module-global api_key/api_base shared with other code)."""
    options = {"base_addresses": {"api": settings.STRIPE_API_BASE.rstrip("/")}} if settings.STRIPE_API_BASE else {}
    # Retries of the SDK reuse one idempotency key, so a retried call is still one call.
    return stripe.StripeClient(settings.STRIPE_API_KEY, max_network_retries=2, **options)


def portal_flow(purpose: str, subscription_id: str | None) -> dict | None:
    """The portal flow (deep link) of a link's purpose; None opens the portal's homepage.

    Flows that act on a subscription need its id; without one the customer gets the
    homepage rather than a refused session (https://stripe.com/docs/customer-management/portal-deep-links).
    """
    if purpose == UPDATE_PAYMENT:
        return {"type": "payment_method_update"}
    # RENEW has no deep link: the flow types are payment_method_update, subscription_cancel,
    # subscription_update and subscription_update_confirm (https://docs.stripe.com/api/
    # customer_portal/sessions/create#create_portal_session-flow_data-type), so it opens the
    # homepage, which lists the subscription with what the portal's configuration allows.
    kind = {MANAGE_SUBSCRIPTION: "subscription_update", CANCEL: "subscription_cancel"}.get(purpose)
    if kind and subscription_id:
        return {"type": kind, kind: {"subscription": subscription_id}}
    return None


def billing_portal_url(settings, customer_id: str, purpose: str, subscription_id: str | None = None) -> str | None:
    """A billing portal session for the customer, opened on the flow of the link's purpose.

    Made at the click: a session "is short-lived and will expire if the customer does not
    visit the URL" (https://docs.stripe.com/api/customer_portal/sessions/object).
    """
    if not is_configured(settings):
        return None
    params = {"customer": customer_id}
    if settings.HUB_BILLING_RETURN_URL:
        params["return_url"] = settings.HUB_BILLING_RETURN_URL
    flow = portal_flow(purpose, subscription_id)
    if flow:
        params["flow_data"] = flow
    return client(settings).v1.billing_portal.sessions.create(params).url


def retry_setup(settings) -> RetrySetup | None:
    """Whether orchestrated retries ask Stripe: they need the API key, which may write invoices."""
    if is_configured(settings):
        return RetrySetup(True, "Stripe is asked to pay the open invoice")
    if settings.STRIPE_WEBHOOK_SECRET:
        return RetrySetup(False, "Stripe's failed payments cannot be asked for: set STRIPE_API_KEY "
                                 "(a key that may write invoices)", missing=True)
    return None


def pay_invoice(settings, payment, idempotency_key: str) -> None:
    """Ask Stripe to attempt the open invoice now (Invoice.pay); one attempt per key.

    No answer (after the SDK's own tries) or a 429 raises RetryLater: Stripe saves a key's
    result only once the endpoint began to run, so the same key may be asked again. A 5xx
    is final for the key: Stripe answers a repeat with the saved 500
    (https://docs.stripe.com/api/idempotent_requests). A decline (402 card_error) raises
    ChargeDeclined, hard when its decline_code or advice_code says no retry will fix it
    (https://docs.stripe.com/declines/codes)."""
    if not is_configured(settings):
        raise RuntimeError("dunning mode is orchestrate but STRIPE_API_KEY is empty")
    try:
        client(settings).v1.invoices.pay(payment.source_id, options={"idempotency_key": idempotency_key})
    except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
        raise RetryLater(0, f"Stripe: {exc.user_message or exc}") from exc
    except stripe.CardError as exc:  # 402: the invoice's payment was attempted and declined
        error = (exc.json_body or {}).get("error") or {}
        raise ChargeDeclined(exc.user_message or str(exc), code=error.get("decline_code") or error.get("code"),
                             hard=hard_decline(error)) from exc
