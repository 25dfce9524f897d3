"""Chargebee events through the pipeline, as a subscriber's state shows them. A backdated change
is ordered by the subscription's resource_version like every other change, and an older version
delivered late never wins (https://apidocs.chargebee.com/docs/api/events: webhooks may arrive
out of order)."""
from __future__ import annotations

import copy
from datetime import datetime, timezone

from sqlalchemy import select

from hub.models import Subscriber, Subscription
from hub.sync.inbox import drain_inbox
from tests.samples import load_sample, post

SUB_ID = "16BjnUSUXm71P3Xq"
CUSTOMER_ID = "16BjnUSUXm6zM2Xk"


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


def subscriber(hub) -> Subscriber:
    with hub.storage.session() as s:
        return s.scalars(select(Subscriber).where(Subscriber.chargebee_customer_id == CUSTOMER_ID)).one()


def test_a_refund_takes_its_amount_off_lifetime_spend(client, hub):
    post(client, "chargebee", load_sample("chargebee/payment_succeeded.json"))
    drain_inbox(hub.storage, hub.settings)
    assert subscriber(hub).lifetime_spend == 4700
    post(client, "chargebee", load_sample("chargebee/payment_refunded.json"))
    drain_inbox(hub.storage, hub.settings)
    assert subscriber(hub).lifetime_spend == 4700 - 1500


def test_a_deleted_payment_source_is_no_card_to_warn_about(client, hub):
    post(client, "chargebee", load_sample("chargebee/card_updated.json"))
    drain_inbox(hub.storage, hub.settings)
    assert subscriber(hub).cards["chargebee:pm_16BjnUSUXm7Vw2Xo"]["exp_year"] == 2029
    post(client, "chargebee", load_sample("chargebee/payment_source_deleted.json"))
    drain_inbox(hub.storage, hub.settings)
    card = subscriber(hub).cards["chargebee:pm_16BjnUSUXm7Vw2Xo"]
    assert (card["exp_month"], card["exp_year"]) == (None, None)


def test_a_paused_subscription_holds_its_resume_date(client, hub):
    post(client, "chargebee", load_sample("chargebee/subscription_paused.json"))
    drain_inbox(hub.storage, hub.settings)
    with hub.storage.session() as s:
        sub = s.scalars(select(Subscription).where(Subscription.source_id == SUB_ID)).one()
        resumes = datetime(2027, 1, 17, 15, tzinfo=timezone.utc)
        assert sub.resumes_at.replace(tzinfo=timezone.utc) == resumes
        # Resuming after the term's end renews on the resume date: the next renewal.
        assert (sub.status, sub.next_renewal_at.replace(tzinfo=timezone.utc)) == ("paused", resumes)
