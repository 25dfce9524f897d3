"""Recharge, the subscription app most Shopify subscription merchants run: its webhooks
(webhook.py). Listing for backfill, customer-portal links and orchestrated retries are not
declared yet: the hub takes what Recharge posts."""
from __future__ import annotations

from webhooks.recharge import webhook
from webhooks.source import Source

SOURCE = Source(
    name=webhook.NAME,
    secret_settings=webhook.SECRET_SETTINGS,
    verify=webhook.verify,
    describe=webhook.describe,
    topics=webhook.TOPICS,
)
