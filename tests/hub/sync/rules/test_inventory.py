"""Shopify inventory webhooks → Out Of Stock / Back In Stock for subscribers whose next
shipment holds the product, through the real webhook endpoint and the worker's drain."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from hub.db.unit import UnitOfWork
from hub.models import Delivery, InboxEvent, Trigger
from hub.sync.inbox import drain_inbox
from standins.shopify import INTERNAL_ERROR
from standins.shopify_billing import FakeShopifyBilling
from tests.samples import SAMPLE_CONTRACT, load_sample, post

ITEM, PRODUCT, VARIANT = "271878346596884015", "788032119674292922", "642667041472713922"


@pytest.fixture
def shop(client, hub):
    with FakeShopifyBilling(token="shpat_stock", owns_contracts=True) as admin:
        hub.settings.SHOPIFY_SHOP = "example.myshopify.com"
        hub.settings.SHOPIFY_ACCESS_TOKEN = "shpat_stock"
        hub.settings.SHOPIFY_ADMIN_URL = admin.url
        hub.settings.SHOPIFY_OWNS_CONTRACTS = True
        hub.settings.KLAVIYO_API_KEY = "pk_test_stock"
        admin.items[ITEM] = (PRODUCT, VARIANT)
        # Bob's contract ships the product on 2026-11-29 (the stand-in's contract).
        admin.hold(SAMPLE_CONTRACT)
        post(client, "shopify", load_sample("shopify/subscription_contracts_create.json"),
             topic="subscription_contracts/create", webhook_id="wh-contract")
        drain_inbox(hub.storage, hub.settings)
        yield admin


def level(client, hub, available, webhook_id, item=ITEM, at="2026-11-10T09:00:00-05:00"):
    payload = {**load_sample("shopify/inventory_levels_update.json"), "inventory_item_id": int(item),
               "available": available, "updated_at": at}
    assert post(client, "shopify", payload, topic="inventory_levels/update", webhook_id=webhook_id).status_code == 200
    drain_inbox(hub.storage, hub.settings)
    with hub.storage.session() as s:
        row = s.scalars(select(InboxEvent).where(InboxEvent.event_id == f"webhook:{webhook_id}")).one()
        return row.status, [name for entry in row.outcome or [] for name in entry["triggers"]]


def stock_triggers(hub):
    with hub.storage.session() as s:
        rows = s.scalars(select(Trigger).where(Trigger.rule.in_(("out-of-stock", "back-in-stock")))
                         .order_by(Trigger.id)).all()
        sent = {d.trigger_id for d in s.scalars(select(Delivery).where(Delivery.connector == "klaviyo"))}
        return [(t.name, t.occasion, t.properties["product_id"], t.id in sent) for t in rows]


def test_out_then_back_in_stock_reach_the_subscriber(client, hub, shop):
    occasion = f"{VARIANT}/2026-11-29/shopify:402440842"
    assert level(client, hub, 0, "wh-inv-1") == ("processed", ["Out Of Stock"])
    assert level(client, hub, 0, "wh-inv-2") == ("processed", [])        # still out: said once
    assert level(client, hub, 4, "wh-inv-3") == ("processed", ["Back In Stock"])
    assert level(client, hub, 9, "wh-inv-4") == ("processed", [])
    assert stock_triggers(hub) == [("Out Of Stock", occasion, PRODUCT, True),
                                   ("Back In Stock", occasion, PRODUCT, True)]
    asked = [r["variables"]["id"] for r in shop.requests if "inventoryItem(" in r["query"]]
    assert asked == [f"gid://shopify/InventoryItem/{ITEM}"] * 4


def test_restock_without_an_earlier_shortage_and_other_items_say_nothing(client, hub, shop):
    shop.items["1"] = ("999", "998")
    assert level(client, hub, 0, "wh-other", item="1") == ("processed", [])
    assert level(client, hub, 5, "wh-back", item=ITEM) == ("processed", [])
    assert stock_triggers(hub) == []


def test_an_unreachable_admin_api_fails_the_row_for_replay(client, hub, shop):
    shop.errors = INTERNAL_ERROR
    status, _ = level(client, hub, 0, "wh-inv-x")
    assert status == "failed"
    shop.errors = None
    from hub.sync.inbox import replay

    with hub.storage.session() as s:
        row = s.scalars(select(InboxEvent).where(InboxEvent.event_id == "webhook:wh-inv-x")).one()
        replay(UnitOfWork(s), row, hub.settings)
    assert [t[0] for t in stock_triggers(hub)] == ["Out Of Stock"]
