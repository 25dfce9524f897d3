"""Subscriptions inferred from Shopify selling-plan orders: cadence, estimate, lapse, superseding."""
from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from hub import events as ev
from hub.events import CanonicalEvent
from hub.jobs import run_time_rules
from hub.models import Subscriber
from hub.sync import outbox
from hub.sync.apply import apply_event
from hub.sync.inbox import drain_inbox
from hub.sync.inference import cadence, cadence_of_gap
from hub.sync.rules import params, renewal
from tests.hub.sync.rules.conftest import at, day, sub
from tests.samples import API_HEADERS, load_sample, post

FIRST = datetime(2026, 9, 1, 15, 0, tzinfo=timezone.utc)
LINE = "Mid-century lounger"  # the sample order's one line on a selling plan (987654321)


@pytest.mark.parametrize("name, expected", [
    ("Delivery every 2 Weeks", ("week", 2)),
    ("Delivery every 1 Week", ("week", 1)),
    ("Deliver every month, save 10%", ("month", 1)),
    ("Every other month", ("month", 2)),
    ("Ships every 30 days", ("day", 30)),
    ("Monthly subscription", ("month", 1)),
    ("Quarterly box", ("month", 3)),
    ("Subscribe & save 15%", None),
    (None, None),
])
def test_cadence_is_read_from_the_selling_plan_name(name, expected):
    assert cadence(name) == expected


@pytest.mark.parametrize("days, expected", [
    (7, ("week", 1)), (14, ("week", 2)), (15, ("week", 2)), (21, ("week", 3)), (28, ("month", 1)),
    (30, ("month", 1)), (33, ("month", 1)), (42, ("week", 6)), (61, ("month", 2)), (91, ("month", 3)),
    (365, ("year", 1)), (10, ("day", 10)), (24, ("day", 24)),
])
def test_cadence_is_learnt_from_the_gap_between_two_orders(days, expected):
    assert cadence_of_gap(timedelta(days=days, hours=3)) == expected


def order(number: int, placed: datetime, plan_name: str | None = None) -> dict:
    """The published orders/paid sample as the subscription app's n-th order of the plan."""
    payload = copy.deepcopy(load_sample("shopify/orders_paid.json"))
    payload["id"] = 820982911946154508 + number
    payload["name"] = f"#{9000 + number}"
    payload["source_name"] = "subscription_contract_checkout_one" if number > 1 else "web"
    for key in ("created_at", "processed_at", "updated_at"):
        payload[key] = placed.isoformat()
    if plan_name:
        for line in payload["line_items"]:
            if line.get("selling_plan_id"):
                line["selling_plan_allocation"] = {"selling_plan": {"id": line["selling_plan_id"],
                                                                    "name": plan_name}}
    return payload


def send(client, hub, topic: str, payload: dict) -> None:
    assert post(client, "shopify", payload, topic, webhook_id=f"{topic}:{payload['id']}").status_code == 200
    drain_inbox(hub.storage, hub.settings)


def subscriptions(client) -> list[dict]:
    answer = client.get("/api/subscribers/john@example.com", headers=API_HEADERS).get_json()
    return answer["subscriber"]["subscriptions"]


def timeline_text(client) -> str:
    return str(client.get("/api/subscribers/john@example.com", headers=API_HEADERS).get_json()["timeline"])


def test_orders_on_a_selling_plan_infer_one_marked_subscription_with_an_estimated_renewal(client, hub):
    send(client, hub, "orders/create", order(1, FIRST))
    send(client, hub, "orders/paid", order(1, FIRST))
    send(client, hub, "orders/paid", order(2, FIRST + timedelta(days=14)))
    [held] = subscriptions(client)
    assert held["source"] == "shopify_inferred" and held["subscription_source"] == "shopify_inferred"
    assert held["next_renewal_estimated"] is True
    assert (held["status"], held["plan"], held["interval"], held["interval_count"]) == ("active", LINE, "week", 2)
    assert held["amount"] == 15999 and held["currency"] == "USD"
    assert held["current_period_start"].startswith("2026-09-15T15:00")  # the last renewal
    assert held["next_renewal_at"].startswith("2026-09-29T15:00")
    assert "inferred from selling-plan orders" in timeline_text(client)
    with hub.storage.session() as s:
        person = s.scalar(select(Subscriber).where(Subscriber.email == "john@example.com"))
        fields = outbox.profile_fields(person)
    assert fields["subscription_source"] == "shopify_inferred" and fields["plan"] == LINE


def test_the_plan_name_gives_the_cadence_from_the_first_order(client, hub):
    send(client, hub, "orders/paid", order(1, FIRST, plan_name="Delivery every 1 Month"))
    [held] = subscriptions(client)
    assert (held["interval"], held["interval_count"]) == ("month", 1)
    assert held["plan"] == f"{LINE} (Delivery every 1 Month)"
    assert held["next_renewal_at"].startswith("2026-10-01T15:00")


def test_an_inferred_subscription_lapses_after_its_estimate_plus_the_grace_and_comes_back_with_an_order(
        client, hub):
    send(client, hub, "orders/paid", order(1, FIRST, plan_name="Delivery every 2 weeks"))
    grace = hub.settings.SHOPIFY_INFERRED_GRACE_DAYS
    estimate = FIRST + timedelta(days=14)
    run_time_rules(hub, estimate + timedelta(days=grace) - timedelta(hours=1))
    assert subscriptions(client)[0]["status"] == "active"
    run_time_rules(hub, estimate + timedelta(days=grace, hours=1))
    [held] = subscriptions(client)
    assert held["status"] == "expired" and held["next_renewal_at"] is None
    assert held["canceled_at"].startswith((estimate + timedelta(days=grace)).date().isoformat())
    send(client, hub, "orders/paid", order(2, estimate + timedelta(days=grace + 2)))
    assert subscriptions(client)[0]["status"] == "active"


def test_recharge_describing_the_same_product_supersedes_the_inferred_subscription(client, hub):
    send(client, hub, "orders/paid", order(1, FIRST))
    with hub.storage.session() as s:
        person = s.scalar(select(Subscriber).where(Subscriber.email == "john@example.com"))
        owned = CanonicalEvent(ev.SUBSCRIPTION_UPSERTED, "recharge", FIRST + timedelta(hours=1),
                               {"source_id": "rc_1", "email": "john@example.com"},
                               {"source_id": "rc_sub_1", "status": "active", "plan": LINE,
                                "plan_id": "49148385", "product_ids": ["788032119674292922"],
                                "interval": "week", "interval_count": 2})
        changes = apply_event(s, owned)
        assert changes.subscriber.id == person.id
    assert [(x["source"], x["source_id"]) for x in subscriptions(client)] == [("recharge", "rc_sub_1")]
    # Later orders of the app's subscription infer nothing beside it.
    send(client, hub, "orders/paid", order(2, FIRST + timedelta(days=14)))
    assert [x["source"] for x in subscriptions(client)] == ["recharge"]


def test_a_shopify_contract_known_by_its_ids_then_filled_in_supersedes_the_inferred_subscription(client, hub):
    """A contract webhook applied by its ids alone names no product: the inferred subscription
    stays beside it. Its older whole record (a reconciliation listing) fills it in; then it
    describes the same product, and the inferred one goes."""
    send(client, hub, "orders/paid", order(1, FIRST))
    customer = {"source_id": "115310627314723954"}  # the sample order's customer, no email
    ids_alone = CanonicalEvent(ev.SUBSCRIPTION_UPSERTED, "shopify", FIRST + timedelta(hours=2), customer,
                               {"source_id": "7879037765", "status": "active"})
    whole = CanonicalEvent(ev.SUBSCRIPTION_UPSERTED, "shopify", FIRST + timedelta(hours=1),
                           {**customer, "email": "john@example.com"},
                           {"source_id": "7879037765", "status": "active", "plan": LINE, "plan_id": "49148385",
                            "product_ids": ["788032119674292922"], "interval": "week", "interval_count": 2})
    with hub.storage.session() as s:
        apply_event(s, ids_alone)
        s.commit()
    assert sorted(x["source"] for x in subscriptions(client)) == ["shopify", "shopify_inferred"]
    with hub.storage.session() as s:
        assert not apply_event(s, whole).stale
        s.commit()
    assert [(x["source"], x["plan"]) for x in subscriptions(client)] == [("shopify", LINE)]


def test_renewal_reminders_skip_an_estimated_renewal_date():
    p = params.load()
    estimate = dict(next_renewal_at=at("2026-12-01T10:00"), interval="month")
    assert renewal.reminders(sub(source="shopify", **estimate), day("2026-11-24"), at("2026-11-24T06:00"), p)
    assert renewal.reminders(sub(source=ev.INFERRED_SOURCE, **estimate), day("2026-11-24"),
                             at("2026-11-24T06:00"), p) == []


def test_a_plan_seen_once_without_a_cadence_lapses_only_a_year_later(client, hub):
    send(client, hub, "orders/paid", order(1, FIRST))
    [held] = subscriptions(client)
    assert held["interval"] is None and held["next_renewal_at"] is None
    grace = timedelta(days=hub.settings.SHOPIFY_INFERRED_GRACE_DAYS)
    run_time_rules(hub, FIRST + timedelta(days=364) + grace)
    assert subscriptions(client)[0]["status"] == "active"
    run_time_rules(hub, FIRST + timedelta(days=366) + grace)
    assert subscriptions(client)[0]["status"] == "expired"


def test_an_order_older_than_the_last_renewal_moves_nothing_back(client, hub):
    send(client, hub, "orders/paid", order(2, FIRST + timedelta(days=14)))
    send(client, hub, "orders/paid", order(1, FIRST))  # delivered late
    [held] = subscriptions(client)
    assert held["current_period_start"].startswith("2026-09-15T15:00")
    assert (held["interval"], held["interval_count"]) == ("week", 2)  # the gap still teaches the cadence
    assert held["next_renewal_at"].startswith("2026-09-29T15:00")
    run_time_rules(hub, FIRST + timedelta(days=60))
    send(client, hub, "orders/paid", order(3, FIRST + timedelta(days=7)))  # older still, after the lapse
    [held] = subscriptions(client)
    assert held["status"] == "expired" and held["next_renewal_at"] is None
