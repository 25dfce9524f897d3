"""Listing Recharge for `hub backfill` and reconciliation (hub/ops/backfill.py drives it).

Customers, subscriptions and charges come from `GET /customers|subscriptions|charges` (API
2021-11, webhooks.recharge.api), 250 a page, sorted by `updated_at-asc` and filtered with
`updated_at_min`, which is also how reconciliation asks for what changed since its last run.
A page's `next_cursor` is the cursor saved between pages; a cursor carries its call's filters,
so the next page is asked with `cursor` and `limit` alone
(https://docs.getrecharge.com/docs/using-cursor-pagination-with-the-recharge-api).

Each object is wrapped as the webhook its state would have sent — webhook bodies are the REST
objects in their resource key (https://docs.getrecharge.com/docs/webhooks-overview) — so
webhooks.recharge.webhook normalizes it unchanged: `customer/updated`,
`subscription/updated` / `subscription/cancelled`, and for a charge by its status
`charge/paid`, `charge/failed` (`charge/max_retries_reached` once no retry is planned),
`charge/upcoming` (queued) and a refunded charge as paid, then refunded. The dedupe id is
(object id, updated_at): the same state is stored once, a later change again.
"""
from __future__ import annotations

from datetime import datetime

from hub.values import utc
from webhooks.listing import Item, Lister, Page, dedupe_id
from webhooks.recharge.api import Client, problem
from webhooks.recharge.webhook import NAME

PAGE_SIZE = 250


class ListingClient(Client):
    """The Recharge client with the listing `page` hub/ops/backfill.py asks for."""

    def page(self, stream: str, cursor: dict | None, since: datetime | None) -> Page:
        if cursor and cursor.get("cursor"):
            params = {"limit": PAGE_SIZE, "cursor": cursor["cursor"]}
        else:
            params = {"limit": PAGE_SIZE, "sort_by": "updated_at-asc"}
            if since is not None:
                params["updated_at_min"] = since.strftime("%Y-%m-%dT%H:%M:%S")
        answer = self.call("GET", stream, params)
        wrap = STREAMS[stream]
        items = [item for obj in answer.get(stream) or [] for item in wrap(obj)]
        following = answer.get("next_cursor")
        return Page(items, {"cursor": following} if following else None)


def _item(kind: str, topic: str, obj: dict, model_kind: str | None, version_suffix: str = "") -> Item:
    key = topic.partition("/")[0]
    event_id = dedupe_id(f"recharge-{kind}", obj["id"], f"{obj.get('updated_at')}{version_suffix}")
    return Item(event_id=event_id, topic=topic, payload={key: obj}, updated_at=utc(obj.get("updated_at")),
                kind=model_kind, source_id=str(obj["id"]))


def customer_items(customer: dict) -> list[Item]:
    return [_item("customer", "customer/updated", customer, "customer")]


def subscription_items(sub: dict) -> list[Item]:
    topic = "subscription/cancelled" if str(sub.get("status")).lower() == "cancelled" else "subscription/updated"
    return [_item("subscription", topic, sub, "subscription")]


def charge_items(charge: dict) -> list[Item]:
    """A charge by its status (https://storefront.getrecharge.com/client/docs/types/type-aliases/ChargeStatus);
    skipped, cancelled and pending charges moved no money and are left out."""
    status = str(charge.get("status") or "").lower()
    if status == "success":
        return [_item("charge", "charge/paid", charge, "payment")]
    if status == "error":
        topic = "charge/failed" if charge.get("retry_date") else "charge/max_retries_reached"
        return [_item("charge", topic, charge, "payment")]
    if status == "queued":
        # A renewal to come, no payment row: reconciliation keeps it whenever it is new.
        return [_item("charge", "charge/upcoming", charge, None)]
    if status in ("refunded", "partially_refunded"):
        # The refund has its own dedupe id and no row of its own to compare with.
        return [_item("charge", "charge/paid", charge, "payment"),
                _item("charge", "charge/refunded", charge, None, ":refund")]
    return []


# stream (list resource) -> wrapper
STREAMS = {"customers": customer_items, "subscriptions": subscription_items, "charges": charge_items}

LISTER = Lister(source=NAME, streams=("customers", "subscriptions", "charges"),
                changes=("customers", "subscriptions", "charges"), problem=problem, client=ListingClient,
                # https://changelog.getrecharge.com/label/6202 (from 19 March 2025)
                limit="Recharge lists paid and refunded charges of the last 90 days only; older ones "
                      "stay in Recharge's Exports, and its queued and failed charges are all listed")
