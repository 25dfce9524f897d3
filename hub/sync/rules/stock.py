"""Out Of Stock / Back In Stock for subscribers whose next shipment holds the product.

One of each per product and shipment date; Back In Stock only after an Out Of Stock.
"""
from __future__ import annotations

from datetime import datetime

from hub.sync.rules.params import RuleParams
from hub.sync.rules.state import Due, SubState, iso, local_day

OUT, BACK = "out-of-stock", "back-in-stock"


def holds(sub: SubState, product_ids: set[str]) -> bool:
    return bool(product_ids & {str(x) for x in sub.product_ids})


def occasion(sub: SubState, item: str, p: RuleParams) -> str:
    return f"{item}/{local_day(sub.next_renewal_at, p.tz).isoformat()}/{sub.ref}"[:120]


def stock_change(sub: SubState, item: dict, available: int | None, now: datetime, p: RuleParams,
                 was_out: bool) -> Due | None:
    """The trigger for one subscription after an inventory change (None when nothing to say).

    `item` holds product_id / variant_id / inventory_item_id; `was_out` tells whether an
    Out Of Stock was already recorded for this product and shipment.
    """
    ids = {str(v) for v in item.values() if v}
    if (not p.stock.enabled or available is None or sub.status not in ("active", "trialing")
            or not sub.next_renewal_at or sub.next_renewal_at <= now or not holds(sub, ids)):
        return None
    key = str(item.get("variant_id") or item.get("product_id") or item.get("inventory_item_id"))
    out = available <= 0
    if not out and not was_out:
        return None
    return Due(rule=OUT if out else BACK, occasion=occasion(sub, key, p),
               name="Out Of Stock" if out else "Back In Stock",
               properties={"product_id": item.get("product_id"), "variant_id": item.get("variant_id"),
                           "available": available, "next_shipment_at": iso(sub.next_renewal_at),
                           **sub.properties()},
               reason=f"item {key} {'out of stock' if out else 'back in stock'} before the shipment of "
                      f"{local_day(sub.next_renewal_at, p.tz).isoformat()}", due_at=now)
