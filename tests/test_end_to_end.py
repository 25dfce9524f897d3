"""Whole paths: a signed webhook in, through the worker, to the model and the tools."""
from __future__ import annotations

from sqlalchemy import select

from hub.inbox import drain_inbox
from hub.models import InboxEvent, Subscriber
from tests.fakes.shopify import FakeShopifyAdmin
from tests.samples import API_HEADERS, load_sample, post


def test_shopify_contract_webhook_with_ids_only_is_completed_from_the_admin_api(client, hub):
    """The contract webhook has no email, price or date: the worker fetches them."""
    with FakeShopifyAdmin(token="shpat_e2e") as admin:
        hub.settings.SHOPIFY_SHOP = "example.myshopify.com"
        hub.settings.SHOPIFY_ACCESS_TOKEN = "shpat_e2e"
        hub.settings.SHOPIFY_ADMIN_URL = admin.url
        response = post(client, "shopify", load_sample("shopify/subscription_contracts_create.json"),
                        topic="subscription_contracts/create", webhook_id="wh-contract-1")
        assert response.status_code == 200
        drain_inbox(hub.storage, hub.settings)
        assert admin.requests and admin.requests[0]["variables"]["id"] == "gid://shopify/SubscriptionContract/402440842"

    body = client.get("/api/subscribers/bob@biller.com", headers=API_HEADERS).get_json()
    [subscription] = body["subscriber"]["subscriptions"]
    assert subscription["source"] == "shopify" and subscription["source_id"] == "402440842"
    assert subscription["amount"] == 4998 and subscription["currency"] == "CAD"
    assert subscription["interval"] == "week" and subscription["interval_count"] == 4
    assert subscription["next_renewal_at"] == "2026-11-29T12:00:00+00:00"


def test_shopify_contract_fetch_failure_marks_the_row_failed_and_replay_recovers_it(client, hub):
    with FakeShopifyAdmin(token="shpat_e2e") as admin:
        hub.settings.SHOPIFY_SHOP = "example.myshopify.com"
        hub.settings.SHOPIFY_ACCESS_TOKEN = "shpat_e2e"
        hub.settings.SHOPIFY_ADMIN_URL = admin.url
        admin.errors = [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]
        post(client, "shopify", load_sample("shopify/subscription_contracts_create.json"),
             topic="subscription_contracts/create", webhook_id="wh-contract-2")
        drain_inbox(hub.storage, hub.settings)
        with hub.storage.session() as s:
            row = s.scalar(select(InboxEvent))
            assert row.status == "failed" and "Throttled" in row.error
            assert s.scalar(select(Subscriber)) is None

        admin.errors = None
        from hub.inbox import replay

        with hub.storage.session() as s:
            replay(s, s.scalar(select(InboxEvent)), hub.settings)
    with hub.storage.session() as s:
        assert s.scalar(select(InboxEvent.status)) == "processed"
        assert s.scalar(select(Subscriber.email)) == "bob@biller.com"
