"""Out Of Stock / Back In Stock for subscribers whose next shipment holds the product."""
from hub.sync.rules import stock
from tests.hub.sync.rules.conftest import at, sub, tweak

NOW = at("2026-04-01T10:00")
BOX = sub(source="shopify", source_id="9", next_renewal_at=at("2026-04-10T08:00"), product_ids=("111", 222))
ITEM = {"product_id": "222", "variant_id": None, "inventory_item_id": "999"}


def test_out_of_stock_for_a_holder(p):
    d = stock.stock_change(BOX, ITEM, 0, NOW, p, was_out=False)
    assert (d.name, d.rule, d.occasion) == ("Out Of Stock", "out-of-stock", "222/2026-04-10/shopify:9")
    assert d.properties["next_shipment_at"] == "2026-04-10T08:00:00+00:00"


def test_back_in_stock_only_after_out(p):
    assert stock.stock_change(BOX, ITEM, 5, NOW, p, was_out=False) is None
    assert stock.stock_change(BOX, ITEM, 5, NOW, p, was_out=True).name == "Back In Stock"


def test_not_for_other_products_or_past_shipments(p):
    assert stock.stock_change(BOX, {"product_id": "333"}, 0, NOW, p, False) is None
    assert stock.stock_change(BOX, ITEM, 0, at("2026-04-10T09:00"), p, False) is None
    assert stock.stock_change(sub(status="paused", product_ids=("222",), next_renewal_at=at("2026-04-10")),
                              ITEM, 0, NOW, p, False) is None


def test_switched_off():
    assert stock.stock_change(BOX, ITEM, 0, NOW, tweak(**{"stock.enabled": False}), False) is None
