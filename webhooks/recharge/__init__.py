"""Recharge, the subscription app most Shopify subscription merchants run: its webhooks
(webhook.py), the Admin API lists for backfill and reconciliation (backfill.py, api.py), and
the customer portal behind hub links (api.customer_page_url). Orchestrated retries are not
declared: Recharge retries charges itself."""
from __future__ import annotations

from webhooks.recharge import api, backfill, webhook
from webhooks.source import Source

SOURCE = Source(
    name=webhook.NAME,
    secret_settings=webhook.SECRET_SETTINGS,
    verify=webhook.verify,
    describe=webhook.describe,
    topics=webhook.TOPICS,
    identified_by="the X-Recharge-Topic header and the object's id",
    lister=backfill.LISTER,
    page_name="Recharge customer portal",
    customer_page=api.customer_page_url,
    linkable=api.is_linkable,
    retry_setup=api.retry_setup,
)
