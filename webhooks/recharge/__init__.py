"""Recharge, the subscription app most Shopify subscription merchants run: webhooks (webhook.py)."""
