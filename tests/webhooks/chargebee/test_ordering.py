"""Chargebee events through the pipeline: a backdated change is ordered by the subscription's
resource_version like every other change, and an older version delivered late never wins
(https://apidocs.chargebee.com/docs/api/events: webhooks may arrive out of order)."""
from __future__ import annotations

import copy

from sqlalchemy import select

from hub.models import Subscription
from hub.sync.inbox import drain_inbox
from tests.samples import load_sample, post

SUB_ID = "16BjnUSUXm71P3Xq"


def version(event_id: str, topic: str, resource_version: int, plan: str) -> dict:
    """subscription_changed's sample as `topic`, at that resource_version, on that plan."""
    payload = copy.deepcopy(load_sample("chargebee/subscription_changed.json"))
    payload.update(id=event_id, event_type=topic)
    sub = payload["content"]["subscription"]
    sub["resource_version"] = resource_version
    sub["updated_at"] = resource_version // 1000
    next(i for i in sub["subscription_items"] if i["item_type"] == "plan")["item_price_id"] = plan
    return payload


def plan_held(hub) -> str:
    with hub.storage.session() as s:
        return s.scalars(select(Subscription).where(Subscription.source == "chargebee",
                                                    Subscription.source_id == SUB_ID)).one().plan_id


def test_backdated_change_applies_and_an_older_version_arriving_later_does_not_overwrite_it(client, hub):
    changed = load_sample("chargebee/subscription_changed.json")["content"]["subscription"]["resource_version"]
    post(client, "chargebee", version("ev_a", "subscription_changed", changed, "Coffee-Club-USD-Every-3-months"))
    # Made later (a higher resource_version), effective from an earlier date.
    post(client, "chargebee", version("ev_b", "subscription_changed_with_backdating", changed + 5000,
                                      "Coffee-Club-USD-Every-6-months"))
    drain_inbox(hub.storage, hub.settings)
    assert plan_held(hub) == "Coffee-Club-USD-Every-6-months"
    # A retry of a version before both, delivered last.
    post(client, "chargebee", version("ev_c", "subscription_changed", changed - 5000, "Coffee-Club-USD-Monthly"))
    drain_inbox(hub.storage, hub.settings)
    assert plan_held(hub) == "Coffee-Club-USD-Every-6-months"
