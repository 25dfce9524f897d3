"""Shopify: webhooks signed with HMAC-SHA256, the Admin GraphQL API (contracts, billing
attempts, inventory items, webhook subscriptions), backfill and the customer account page."""
from __future__ import annotations

from webhooks.shopify import backfill, billing, webhook
from webhooks.source import Source

SOURCE = Source(
    name=webhook.NAME,
    secret_settings=webhook.SECRET_SETTINGS,
    verify=webhook.verify,
    describe=webhook.describe,
    topics=webhook.TOPICS,
    identified_by="the X-Shopify-Topic and X-Shopify-Webhook-Id headers",
    enrich=webhook.ENRICH,
    lister=backfill.LISTER,
    page_name="Shopify account page",
    customer_page=billing.account_url,
    linkable=billing.shop_domain,
    retry_payment=billing.create_billing_attempt,
    retry_setup=billing.retry_setup,
    item_products=billing.inventory_item_products,
)
