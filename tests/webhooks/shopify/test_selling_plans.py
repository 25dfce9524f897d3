"""What Shopify's order payloads say of the selling plan a line was bought on, for inference."""
from __future__ import annotations

import copy
from datetime import datetime, timezone

from hub.sync.inference import cadence, plan_lines
from tests.samples import load_sample
from webhooks import Envelope
from webhooks.shopify import backfill
from webhooks.shopify import webhook as shopify

ENVELOPE = Envelope(event_id="test", topic="orders/paid", shop="example.myshopify.com", api_version="2026-10",
                    triggered_at=datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc))


def paid(payload: dict) -> dict:
    [event] = shopify.TOPICS["orders/paid"](payload, ENVELOPE)
    return event.data


def test_a_2026_10_order_names_the_plan_by_id_only_and_infers_a_subscription_of_unknown_cadence():
    [line] = plan_lines(paid(load_sample("shopify/orders_paid.json"))["line_items"])
    assert (line.plan_id, line.plan_name, line.title, line.price) == ("987654321", None, "Mid-century lounger",
                                                                      15999)
    assert cadence(line.plan_name) is None  # the gap to the next order of the plan will tell


def test_a_line_with_a_selling_plan_allocation_carries_the_plan_s_name_and_its_cadence():
    # The storefront's shape of the allocation (https://shopify.dev/docs/api/liquid/objects/selling_plan).
    payload = copy.deepcopy(load_sample("shopify/orders_paid.json"))
    line = payload["line_items"][3]
    line["selling_plan_allocation"] = {"selling_plan": {"id": 610435137, "name": "Delivery every 1 Week"}}
    del line["selling_plan_id"]
    [found] = plan_lines(paid(payload)["line_items"])
    assert (found.plan_id, found.plan_name) == ("610435137", "Delivery every 1 Week")
    assert cadence(found.plan_name) == ("week", 1)


def test_a_backfilled_order_keeps_the_plan_name_graphql_gives():
    node = {"id": "gid://shopify/Order/1", "name": "#1001", "email": "ada@example.com",
            "createdAt": "2026-10-01T10:00:00Z", "processedAt": "2026-10-01T10:00:00Z",
            "updatedAt": "2026-10-01T10:00:00Z", "displayFinancialStatus": "PAID", "currencyCode": "USD",
            "sourceName": "subscription_contract_checkout_one",
            "totalPriceSet": {"shopMoney": {"amount": "18.00", "currencyCode": "USD"}},
            "customer": {"id": "gid://shopify/Customer/7", "email": "ada@example.com"},
            "lineItems": {"nodes": [{
                "title": "Starter Bag", "quantity": 1, "variant": {"id": "gid://shopify/ProductVariant/44"},
                "product": {"id": "gid://shopify/Product/88"},
                "originalUnitPriceSet": {"shopMoney": {"amount": "18.00"}},
                "sellingPlan": {"sellingPlanId": "gid://shopify/SellingPlan/69", "name": "Delivery every 2 Weeks"}}]}}
    item = backfill.order_item(node)
    [line] = plan_lines(paid(item.payload)["line_items"])
    assert (line.plan_id, line.plan_name, line.product_id) == ("69", "Delivery every 2 Weeks", "88")
