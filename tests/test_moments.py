"""Lifecycle moments through the real webhook endpoints, as the email tools receive them:
exact triggers and properties for cancellations (why, and whether the subscriber chose to
leave), plan changes, pauses, skips, scheduled ends and card updates, on Stripe, Chargebee
and Recharge."""
from __future__ import annotations

import copy
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from hub.models import Trigger
from hub.sync.inbox import drain_inbox
from tests.samples import load_sample, post, stripe_event

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

UTC = timezone.utc
T0 = int(datetime(2026, 3, 1, 10, tzinfo=UTC).timestamp())
DAY = 86400


def fired(hub, name: str) -> list[dict]:
    with hub.storage.session() as s:
        return [t.properties for t in s.scalars(select(Trigger).where(Trigger.name == name, Trigger.status == "fired")
                                                 .order_by(Trigger.id))]


def send(client, hub, source: str, payload: dict, topic: str | None = None) -> None:
    assert post(client, source, payload, topic=topic).status_code == 200
    drain_inbox(hub.storage, hub.settings)


# --- Stripe objects, from the `pay` gem's published samples ------------------------------------

def stripe_subscription(sid="sub_m1", customer="cus_m1", price=("price_m", "Coffee Monthly", 2500), **extra):
    obj = copy.deepcopy(load_sample("shared:stripe/pay/subscription.created.json")["object"])
    price_id, nickname, amount = price
    item = obj["items"]["data"][0]
    item.update(id=f"si_{sid}", quantity=1, subscription=sid, current_period_start=T0,
                current_period_end=T0 + 31 * DAY,
                price={**item["price"], "id": price_id, "nickname": nickname, "unit_amount": amount,
                       "currency": "usd", "product": "prod_coffee",
                       "recurring": {"interval": "month", "interval_count": 1}})
    for legacy in ("plan", "quantity", "current_period_start", "current_period_end"):
        obj.pop(legacy, None)
    obj.update({"id": sid, "customer": customer, "status": "active", "created": T0,
                "cancel_at_period_end": False, "canceled_at": None, "trial_end": None, **extra})
    return obj


def stripe_send(client, hub, event_type, obj, n, at, previous_attributes=None):
    send(client, hub, "stripe", stripe_event(event_type, obj, event_id=f"evt_m{n}", created=at,
                                             previous_attributes=previous_attributes))


# --- 1. why people leave ------------------------------------------------------------------------

def test_stripe_cancellation_carries_the_customers_feedback_and_is_voluntary(client, hub):
    stripe_send(client, hub, "customer.subscription.created", stripe_subscription(), 1, T0)
    ended = stripe_subscription(status="canceled", canceled_at=T0 + 5 * DAY, cancellation_details={
        "reason": "cancellation_requested", "feedback": "too_expensive", "comment": "Coffee budget cut"})
    stripe_send(client, hub, "customer.subscription.deleted", ended, 2, T0 + 5 * DAY)
    [props] = fired(hub, "Subscription Cancelled")
    assert (props["cancellation_reason"], props["cancellation_comment"], props["churn_type"]) == (
        "too_expensive", "Coffee budget cut", "voluntary")


def test_stripe_cancellation_after_failed_payment_is_involuntary(client, hub):
    stripe_send(client, hub, "customer.subscription.created", stripe_subscription(), 1, T0)
    ended = stripe_subscription(status="canceled", canceled_at=T0 + 5 * DAY, cancellation_details={
        "reason": "payment_failed", "feedback": None, "comment": None})
    stripe_send(client, hub, "customer.subscription.deleted", ended, 2, T0 + 5 * DAY)
    [props] = fired(hub, "Subscription Cancelled")
    assert (props["cancellation_reason"], props["churn_type"]) == ("payment_failed", "involuntary")


def test_chargebee_cancellation_for_non_payment_is_involuntary(client, hub):
    send(client, hub, "chargebee", load_sample("chargebee/subscription_created.json"))
    send(client, hub, "chargebee", load_sample("chargebee/subscription_cancelled.json"))
    [props] = fired(hub, "Subscription Cancelled")
    assert (props["cancellation_reason"], props["churn_type"]) == ("not_paid", "involuntary")


def test_chargebee_cancellation_with_a_reason_code_is_voluntary(client, hub):
    send(client, hub, "chargebee", load_sample("chargebee/subscription_created.json"))
    payload = copy.deepcopy(load_sample("chargebee/subscription_cancelled.json"))
    sub = payload["content"]["subscription"]
    del sub["cancel_reason"]
    sub["cancel_reason_code"] = "Too expensive"
    send(client, hub, "chargebee", payload)
    [props] = fired(hub, "Subscription Cancelled")
    assert (props["cancellation_reason"], props["churn_type"]) == ("Too expensive", "voluntary")


@pytest.mark.parametrize("retries_ran_out, churn", [(False, "voluntary"), (True, "involuntary")])
def test_recharge_cancellation_carries_its_reason_and_churn_type(client, hub, retries_ran_out, churn):
    payload = copy.deepcopy(load_sample("shared:recharge/subscription_cancelled.json"))
    payload["subscription"]["max_retries_reached"] = retries_ran_out
    send(client, hub, "recharge", payload, topic="subscription/cancelled")
    [props] = fired(hub, "Subscription Cancelled")
    assert (props["cancellation_reason"], props["cancellation_comment"], props["churn_type"]) == (
        "some reason", "comments go here", churn)
