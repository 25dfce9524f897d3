"""Stripe: signed events, the API through the official SDK (backfill, the billing portal,
paying an open invoice, the webhook endpoint `hub install` registers)."""
from __future__ import annotations

from webhooks.source import Source
from webhooks.stripe import backfill, billing, webhook

SOURCE = Source(
    name=webhook.NAME,
    secret_settings=webhook.SECRET_SETTINGS,
    verify=webhook.verify,
    describe=webhook.describe,
    topics=webhook.TOPICS,
    identified_by="the event's id and type",
    enrich=webhook.ENRICH,
    lister=backfill.LISTER,
    page_name="Stripe portal",
    customer_page=billing.billing_portal_url,
    linkable=billing.is_configured,
    retry_payment=billing.pay_invoice,
    retry_setup=billing.retry_setup,
    own_retries=billing.OWN_RETRIES,
)
