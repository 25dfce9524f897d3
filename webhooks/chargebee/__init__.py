"""Chargebee: events with HTTP basic auth, the list APIs for backfill, the hosted pages
and portal sessions behind hub links, and collecting an unpaid invoice (plain HTTP, no SDK)."""
from __future__ import annotations

from webhooks.chargebee import backfill, billing, webhook
from webhooks.source import Source

SOURCE = Source(
    name=webhook.NAME,
    secret_settings=webhook.SECRET_SETTINGS,
    verify=webhook.verify,
    describe=webhook.describe,
    topics=webhook.TOPICS,
    enrich=billing.ENRICH,
    identified_by="the event's id and event_type",
    lister=backfill.LISTER,
    page_name="Chargebee",
    customer_page=billing.customer_page_url,
    linkable=billing.is_configured,
    retry_payment=billing.collect_payment,
    retry_setup=billing.retry_setup,
    own_retries=billing.OWN_RETRIES,
)
