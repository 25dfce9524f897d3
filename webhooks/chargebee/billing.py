"""Chargebee calls of the rule layer: the page behind a hub link, made at the click, and, in
dunning mode `orchestrate`, collecting an unpaid invoice now; and of the worker: a subscription
as its scheduled changes will make it (ENRICH).

An update-payment link opens the `manage_payment_sources` hosted page
(https://apidocs.chargebee.com/docs/api/hosted_pages); managing or cancelling a subscription
opens a portal session (https://apidocs.chargebee.com/docs/api/portal_sessions), whose access
URL must be opened within an hour and only once, hence made at the click.

Plain HTTP with basic auth, like webhooks.chargebee.backfill: the `chargebee` SDK builds its
URL from the site name and switches to plain http (a loopback stand-in) only through a
class-wide flag, which would reach every other Chargebee call of the process.
Declared in webhooks.chargebee.SOURCE.
"""
from __future__ import annotations

from urllib.parse import quote

import requests

from hub.errors import ChargeDeclined, RetryLater
from hub.models.link import UPDATE_PAYMENT
from hub.values import asks_again
from webhooks.chargebee.backfill import base_url
from webhooks.source import RetrySetup

TIMEOUT_S = 10
# Chargebee's dunning retries a failed card payment on its own and names the next try in the
# invoice's next_retry_at; it is set up in "Settings > Configure Chargebee > Dunning for
# online/offline payments" (https://www.chargebee.com/docs/billing/2.0/kb/billing/how-do-i-configure-dunning-and-update-dunning-email-settings-in-chargebee).
OWN_RETRIES = "Settings → Configure Chargebee → Dunning for online/offline payments"


class ChargebeeError(RuntimeError):
    """Chargebee refused a call (its page, a payment collection), or failed it."""

    def __init__(self, message: str, status: int | None = None, kind: str | None = None, said: str | None = None):
        super().__init__(message)
        self.status = status
        self.kind = kind  # Chargebee's error `type`: payment (a decline), invalid_request…
        self.said = said  # Chargebee's own message


def is_configured(settings) -> bool:
    return bool(settings.CHARGEBEE_API_KEY and (settings.CHARGEBEE_SITE or settings.CHARGEBEE_API_BASE))


def retry_setup(settings) -> RetrySetup | None:
    """Whether orchestrated retries ask Chargebee: they need the site and an API key."""
    if is_configured(settings):
        return RetrySetup(True, "Chargebee is asked to collect the unpaid invoice")
    if settings.CHARGEBEE_SITE or settings.CHARGEBEE_API_BASE:
        return RetrySetup(False, "Chargebee's failed payments cannot be asked for: set CHARGEBEE_API_KEY "
                                 "(a full-access key: collect_payment writes invoices)", missing=True)
    return None


def _post(settings, path: str, form: dict, headers: dict | None = None) -> dict:
    return _answer(path, requests.post(f"{base_url(settings)}/api/v2/{path}", data=form, timeout=TIMEOUT_S,
                                       auth=(settings.CHARGEBEE_API_KEY, ""), headers=headers))


def _get(settings, path: str) -> dict:
    return _answer(path, requests.get(f"{base_url(settings)}/api/v2/{path}", timeout=TIMEOUT_S,
                                      auth=(settings.CHARGEBEE_API_KEY, "")))


def _answer(path: str, answer: requests.Response) -> dict:
    """The JSON object of a 200; ChargebeeError with Chargebee's own words otherwise, and for
    a 200 that is not a JSON object (a proxy's page: status 502, as Chargebee's own trouble)."""
    if answer.status_code != 200:
        try:
            error = answer.json()
        except ValueError:
            error = {}
        raise ChargebeeError(f"{path}: HTTP {answer.status_code} {error.get('message') or ''}".strip(),
                             answer.status_code, error.get("type"), error.get("message"))
    try:
        document = answer.json()
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise ChargebeeError(f"{path}: HTTP 200 with a body that is not a JSON object", 502)
    return document


def attach_scheduled(payload: dict, settings) -> dict:
    """ENRICH step: for a subscription with changes scheduled (`has_scheduled_changes`, a new
    plan or price from its next term), the subscription as it will be, under "_scheduled"
    (GET /api/v2/subscriptions/{id}/retrieve_with_scheduled_changes, "the subscription
    resource with the scheduled change applied"). Unchanged without an API key or when
    Chargebee refuses: the event still applies as it is. No answer (unreachable, 408, 425,
    429, 5xx) raises RetryLater: the webhook waits and tries again by itself (hub.sync.inbox)
    rather than announce a renewal at the price it will no longer have."""
    subscription = (payload.get("content") or {}).get("subscription") or {}
    if not (subscription.get("has_scheduled_changes") and subscription.get("id") and is_configured(settings)):
        return payload
    path = f"subscriptions/{quote(str(subscription['id']), safe='')}/retrieve_with_scheduled_changes"
    try:
        scheduled = _get(settings, path).get("subscription")
    except requests.RequestException as exc:
        raise RetryLater(0, f"Chargebee did not answer {path}: {type(exc).__name__}") from exc
    except ChargebeeError as exc:
        if asks_again(exc.status):
            raise RetryLater(0, f"Chargebee did not answer: {exc}") from exc
        return payload
    return {**payload, "_scheduled": scheduled} if scheduled else payload


ENRICH = dict.fromkeys(("subscription_changes_scheduled", "subscription_renewal_reminder"), attach_scheduled)


def customer_page_url(settings, customer_id: str, purpose: str, subscription_id: str | None = None) -> str | None:
    """A hosted page to replace the card, or the customer portal for everything else."""
    if not is_configured(settings):
        return None
    form = {"customer[id]": customer_id}
    if settings.HUB_BILLING_RETURN_URL:
        form["redirect_url"] = settings.HUB_BILLING_RETURN_URL
    if purpose == UPDATE_PAYMENT:
        return _post(settings, "hosted_pages/manage_payment_sources", form)["hosted_page"]["url"]
    return _post(settings, "portal_sessions", form)["portal_session"]["access_url"]


def collect_payment(settings, payment, idempotency_key: str) -> None:
    """Ask Chargebee to charge the unpaid invoice now with the customer's payment source
    (POST /api/v2/invoices/{id}/collect_payment, for payment_due and not_paid invoices:
    https://apidocs.chargebee.com/docs/api/v2/pcv-1/invoices/collect-payment-for-an-invoice).

    The trigger's key goes as `chargebee-idempotency-key`, so a repeated call within Chargebee's
    30-minute window answers the first result instead of charging again
    (https://apidocs.chargebee.com/docs/api/v1/idempotency?prod_cat_ver=1). A decline is an
    HTTP 400 of type `payment`, raised as ChargeDeclined. No `payment_source_id` is sent: it is
    optional, and without it Chargebee charges the customer's primary payment source, the card
    a Payment Method Updated has just made the default.

    No answer, or a status asking to be asked again (408, 425, 429, 5xx), raises RetryLater
    (hub.sync.retries asks again). An ask repeated after the key's window cannot charge twice:
    collect_payment takes payment_due and not_paid invoices only, so an invoice the first
    call paid is refused.
    """
    if not is_configured(settings):
        raise ChargebeeError("dunning mode is orchestrate but CHARGEBEE_SITE / CHARGEBEE_API_KEY are empty")
    try:
        _post(settings, f"invoices/{quote(payment.source_id, safe='')}/collect_payment", {},
              headers={"chargebee-idempotency-key": idempotency_key})
    except requests.RequestException as exc:
        raise RetryLater(0, f"Chargebee unreachable: {type(exc).__name__}") from exc
    except ChargebeeError as exc:
        if asks_again(exc.status):
            raise RetryLater(0, str(exc)) from exc
        if exc.kind == "payment":  # the gateway declined the charge
            raise ChargeDeclined(exc.said or str(exc)) from exc
        raise
