"""Contracts another app owns: Shopify shows the hub none of them, and the hub degrades."""
from __future__ import annotations

from sqlalchemy import select

from hub.models import InboxEvent, Subscriber
from hub.sync.inbox import drain_inbox
from standins.shopify import FakeShopifyAdmin
from tests.samples import load_sample, post

SHOP = "example.myshopify.com"


def sample(name: str) -> dict:
    return load_sample(f"shopify/{name}.json")


def test_an_unowned_contract_is_refused_and_the_rows_and_orders_still_process(client, hub):
    """A normal store: its subscription app owns the contracts, so Shopify shows the hub none;
    the contract rows apply what their ids say, and the order path is untouched."""
    with FakeShopifyAdmin(token="shpat_e2e") as other:
        other.scopes |= {"read_own_subscription_contracts"}  # even with the scope: not the hub's
        hub.settings.SHOPIFY_SHOP, hub.settings.SHOPIFY_ACCESS_TOKEN = SHOP, "shpat_e2e"
        hub.settings.SHOPIFY_ADMIN_URL, hub.settings.SHOPIFY_OWNS_CONTRACTS = other.url, True
        post(client, "shopify", sample("subscription_contracts_create"), topic="subscription_contracts/create",
             webhook_id="wh-c")
        post(client, "shopify", sample("subscription_billing_attempts_failure"),
             topic="subscription_billing_attempts/failure", webhook_id="wh-f")
        post(client, "shopify", sample("orders_paid"), topic="orders/paid", webhook_id="wh-o")
        drain_inbox(hub.storage, hub.settings)
        assert len(other.requests) == 2  # asked for both contracts, shown neither
    with hub.storage.session() as session:
        assert {row.topic: row.status for row in session.scalars(select(InboxEvent))} == {
            "subscription_contracts/create": "processed", "subscription_billing_attempts/failure": "processed",
            "orders/paid": "processed"}
        emails = set(session.scalars(select(Subscriber.email)))
    assert "bob@biller.com" not in emails  # the contract's customer was never shown
    assert "jon@example.com" in emails or "john@example.com" in emails
