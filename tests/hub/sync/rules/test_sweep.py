"""Rules against a real database: the event path and the sweep, on a simulated calendar."""
from dataclasses import replace
from datetime import timedelta

from sqlalchemy import select

from hub.models import Subscriber, Trigger
from hub.sync import rules
from tests.hub.sync.rules.conftest import World, at, monthly, tweak
from webhooks import SOURCES


def days(world, first, count, hour="06:00"):
    """Sweep once per day; {date: counts} of the days that fired something."""
    out = {}
    for i in range(count):
        when = (at(first) + timedelta(days=i)).date().isoformat()
        got = world.sweep(f"{when}T{hour}")
        if got:
            out[when] = got
    return out


def test_a_month_of_a_new_subscriber(world):
    assert world.emit("subscription.upserted", "2026-01-01T10:00", monthly()) == [
        "Subscription Started", "Welcome Step"]
    assert world.emit("payment.succeeded", "2026-01-01T10:01",
                      {"source_id": "in_0", "subscription_source_id": "sub_1", "amount": 2500,
                       "currency": "USD"}) == []
    fired = days(world, "2026-01-02", 31)
    assert fired == {"2026-01-03": {"welcome": 1}, "2026-01-06": {"welcome": 1},
                     "2026-01-18": {"renewal": 1}, "2026-01-25": {"renewal": 1},
                     "2026-01-31": {"renewal": 1, "lifecycle": 1}}
    s = world.subscriber()
    assert (s.stage, s.tier, s.loyalty_points) == ("engaged", "Bronze", 25)
    assert world.triggers(name="Stage Changed")[0][2].startswith("new->engaged/2026-01-31")


def test_sweeps_run_twice_fire_once(world):
    world.emit("subscription.upserted", "2026-01-01T10:00", monthly())
    assert world.sweep("2026-01-18T06:00") == {"renewal": 1}
    assert world.sweep("2026-01-18T06:00") == {}
    assert world.sweep("2026-01-18T23:00") == {}
    assert len(world.triggers(rule="renewal-14d")) == 1


def test_a_repeated_event_fires_nothing_new(world):
    data = monthly()
    assert world.emit("subscription.upserted", "2026-01-01T10:00", data)
    assert world.emit("subscription.upserted", "2026-01-01T10:00", data) == []


def test_a_state_arriving_on_its_due_day_fires_at_once(world):
    world.sweep("2026-01-25T00:05")   # the morning sweep ran before the subscription existed
    fired = world.emit("subscription.upserted", "2026-01-25T10:00",
                       monthly(start="2026-01-25T10:00", renews="2026-02-01T10:00"))
    assert "Renewal Reminder" in fired
    assert world.sweep("2026-01-26T00:05") == {}


def test_missed_days_are_caught_up_once(world):
    world.emit("subscription.upserted", "2026-01-01T10:00", monthly())
    world.sweep("2026-01-16T06:00")
    # Days Jan 18-25 (today and 7 before): the 14d (Jan 18) and 7d (Jan 25) reminders.
    assert world.sweep("2026-01-25T06:00") == {"renewal": 2}
    assert world.sweep("2026-01-25T07:00") == {}


def test_catch_up_is_capped(tmp_path):
    world = World(tmp_path, tweak(max_catch_up_days=3))
    world.emit("subscription.upserted", "2026-01-01T10:00", monthly())
    world.sweep("2026-01-10T06:00")
    assert world.sweep("2026-01-26T06:00") == {"renewal": 1}   # only Jan 23-26: the 7d reminder


def test_moved_renewal_cancels_the_old_date_and_moving_back_restores_it(world):
    world.emit("subscription.upserted", "2026-01-01T10:00", monthly())
    world.sweep("2026-01-18T06:00")
    world.emit("subscription.upserted", "2026-01-20T10:00", monthly(renews="2026-03-01T10:00"))
    old = "2026-02-01/stripe:sub_1"
    assert world.triggers(occasion=old) == [
        ("Renewal Reminder", "renewal-14d", old, "fired"),
        ("Renewal Reminder", "renewal-7d", old, "cancelled"),
        ("Renewal Reminder", "renewal-1d", old, "cancelled")]
    assert world.sweep("2026-01-25T06:00") == {}
    world.emit("subscription.upserted", "2026-01-21T10:00", monthly())   # skip undone
    assert world.triggers(occasion=old, status="cancelled") == []
    assert world.sweep("2026-01-25T06:00") == {"renewal": 1}


def test_cancellation_then_win_back_unless_they_return(tmp_path):
    for returns in (False, True):
        world = World(tmp_path / str(returns))
        world.emit("subscription.upserted", "2026-01-01T10:00", monthly())
        world.sweep("2026-01-18T06:00")
        fired = world.emit("subscription.canceled", "2026-01-20T10:00",
                           monthly(status="canceled", renews=None))
        assert fired == ["Subscription Cancelled", "Stage Changed"]
        assert [t[3] for t in world.triggers(name="Renewal Reminder")] == ["fired", "cancelled", "cancelled"]
        if returns:
            world.emit("subscription.upserted", "2026-02-10T10:00",
                       monthly("sub_2", start="2026-02-10T10:00", renews="2026-03-10T10:00"))
        world.sweep("2026-02-18T06:00")
        world.sweep("2026-02-19T06:00")
        assert world.triggers(name="Win Back") == [
            ("Win Back", "win-back", "2026-01-20/stripe:sub_1", "skipped" if returns else "fired")]
        # A return is not new: tenure counts from the first subscription.
        assert world.subscriber().stage == ("engaged" if returns else "churned")


def test_welcome_steps_skipped_after_churn(world):
    world.emit("subscription.upserted", "2026-01-01T10:00", monthly())
    days(world, "2026-01-02", 2)
    world.emit("subscription.canceled", "2026-01-04T10:00", monthly(status="canceled", renews=None))
    days(world, "2026-01-04", 4)
    assert world.triggers(name="Welcome Step") == [
        ("Welcome Step", "welcome-0d", "first-subscription", "fired"),
        ("Welcome Step", "welcome-2d", "first-subscription", "fired"),
        ("Welcome Step", "welcome-5d", "first-subscription", "skipped")]


def test_dunning_through_recovery(world):
    world.emit("subscription.upserted", "2026-01-01T10:00", monthly())
    failed = world.emit("payment.failed", "2026-02-01T10:05",
                        {"source_id": "in_1", "subscription_source_id": "sub_1", "amount": 2500,
                         "currency": "USD", "update_payment_url": "https://billing.example/x"})
    assert failed == ["Payment Failed", "Stage Changed"]
    fired = days(world, "2026-02-02", 9)
    assert fired == {"2026-02-04": {"dunning": 2}, "2026-02-05": {"dunning": 1},
                     "2026-02-07": {"dunning": 1}, "2026-02-08": {"dunning": 2}}
    paid = world.emit("payment.succeeded", "2026-02-10T09:00",
                      {"source_id": "in_1", "subscription_source_id": "sub_1", "amount": 2500, "currency": "USD"})
    assert paid == ["Payment Recovered", "Stage Changed"]
    assert days(world, "2026-02-11", 20) == {}
    link = world.triggers(name="Payment Failed")
    assert link and world.subscriber().stage == "engaged"


def test_orchestrate_asks_for_each_retry_once(tmp_path, monkeypatch):
    world = World(tmp_path, tweak(**{"dunning.mode": "orchestrate"}))
    asked = []
    from hub.config import Settings

    world.settings = Settings.from_env(env={})
    monkeypatch.setitem(SOURCES, "stripe", replace(SOURCES["stripe"],
                        retry_payment=lambda settings, pay, key: asked.append((pay.source_id, key))))
    world.emit("subscription.upserted", "2026-01-01T10:00", monthly())
    world.emit("payment.failed", "2026-02-01T10:05",
               {"source_id": "in_1", "subscription_source_id": "sub_1", "amount": 2500, "currency": "USD"})
    for _ in range(2):
        days(world, "2026-02-02", 20)
    assert asked == [("in_1", f"1:payment-retry:stripe:in_1/retry-{n}") for n in (1, 2, 3)]


def test_hard_decline_gets_no_retries(world):
    world.emit("subscription.upserted", "2026-01-01T10:00", monthly())
    world.emit("payment.failed", "2026-02-01T10:05",
               {"source_id": "in_1", "subscription_source_id": "sub_1", "amount": 2500, "currency": "USD",
                "hard_decline": True, "decline_code": "stolen_card"})
    days(world, "2026-02-02", 20)
    assert world.triggers(name="Payment Retry Scheduled") == []
    assert len(world.triggers(name="Payment Reminder")) == 8


def test_trial_and_card_from_the_sweep(world):
    world.emit("subscription.upserted", "2026-10-01T10:00",
               monthly(status="trialing", trial_end=at("2026-10-15T10:00"), renews="2026-10-15T10:00"))
    world.emit("payment_method.updated", "2026-10-01T10:00",
               {"source_id": "pm_1", "brand": "visa", "last4": "4242", "exp_month": 11, "exp_year": 2026})
    assert world.sweep("2026-10-12T06:00") == {"trial": 1}
    assert world.sweep("2026-11-01T06:00") == {"card_expiry": 1, "lifecycle": 1}
    (card,) = world.triggers(name="Card Expiring")
    assert card[2] == "2026-11/stripe:pm_1"


def test_platform_notices_fire_on_arrival(world):
    world.emit("subscription.upserted", "2026-10-01T10:00",
               monthly(status="trialing", trial_end=at("2026-10-15T10:00"), renews="2026-10-15T10:00"))
    assert world.emit("trial.ending", "2026-10-12T10:00",
                      monthly(status="trialing", trial_end=at("2026-10-15T10:00"))) == ["Trial Ending"]
    assert "Card Expiring" in world.emit("payment_method.expiring", "2026-11-05T10:00",
                                         {"source_id": "pm_1", "brand": "visa", "last4": "4242",
                                          "exp_month": 11, "exp_year": 2026})
    assert world.sweep("2026-10-12T11:00") == {}


def test_history_is_recorded_as_skipped(world):
    assert world.emit("subscription.upserted", "2025-06-01T10:00", monthly(start="2025-06-01T10:00"),
                      history=True) == []
    assert {t[3] for t in world.triggers()} == {"skipped"}
    assert world.subscriber().stage == "new"


def test_tier_and_points_follow_spend_and_refunds(world):
    order = {"source_id": "1001", "number": "#1001", "total": 60000, "currency": "USD", "placed_at": at("2026-01-01")}
    assert "Tier Changed" in world.emit("order.paid", "2026-01-01T10:00", order, source="shopify")
    assert (world.subscriber().tier, world.subscriber().loyalty_points) == ("Silver", 600)
    refund = {"source_id": "r1", "order_source_id": "1001", "amount": 20000, "currency": "USD"}
    assert world.emit("order.refunded", "2026-01-03T10:00", refund, source="shopify") == ["Tier Changed"]
    assert (world.subscriber().tier, world.subscriber().loyalty_points) == ("Bronze", 400)


def test_usage_upsell_once_per_cycle(world):
    world.emit("subscription.upserted", "2026-01-01T10:00", monthly(usage_limit=100))
    with world.storage.session() as session:
        s = session.scalar(select(Subscriber))
        s.usage = [{"at": "2026-01-10T10:00:00+00:00", "quantity": 80}]
        assert [t.name for t in rules.on_usage(session, s, at("2026-01-10T11:00"), params=world.p)] == [
            "Upsell Opportunity"]
        s.usage = s.usage + [{"at": "2026-01-11T10:00:00+00:00", "quantity": 80}]
        assert rules.on_usage(session, s, at("2026-01-11T11:00"), params=world.p) == []


def test_stock_changes_reach_the_next_shipment(world):
    from hub.events import CanonicalEvent

    world.emit("subscription.upserted", "2026-01-01T10:00",
               monthly("77", product_ids=["gid-1", "555"]), source="shopify")
    with world.storage.session() as session:
        def change(available, when):
            event = CanonicalEvent("inventory.changed", "shopify", at(when),
                                   data={"product_id": "555", "available": available})
            return [t.name for t in rules.on_inventory(session, event, at(when), params=world.p)]

        assert change(3, "2026-01-20T10:00") == []
        assert change(0, "2026-01-21T10:00") == ["Out Of Stock"]
        assert change(0, "2026-01-21T11:00") == []
        assert change(4, "2026-01-22T10:00") == ["Back In Stock"]


def test_erased_subscribers_get_nothing(world):
    world.emit("subscription.upserted", "2026-01-01T10:00", monthly())
    with world.storage.session() as session:
        session.scalar(select(Subscriber)).erased_at = at("2026-01-02")
    assert world.sweep("2026-01-18T06:00") == {}
    with world.storage.session() as session:
        count = len(session.scalars(select(Trigger)).all())
    assert count == 2


def test_an_old_cancellation_first_seen_is_not_news(world):
    old = monthly(status="canceled", renews=None, canceled_at=at("2025-03-01"))
    assert world.emit("subscription.upserted", "2026-01-01T10:00", old) == []
    assert world.triggers(name="Subscription Cancelled") == []
    assert world.emit("subscription.upserted", "2026-01-02T10:00", monthly("sub_2")) == [
        "Subscription Started", "Stage Changed"]
    assert world.emit("subscription.upserted", "2026-01-09T10:00",
                      monthly("sub_2", status="canceled", renews=None, canceled_at=at("2026-01-09T10:00"))
                      )[:1] == ["Subscription Cancelled"]


def test_daily_recompute_sees_open_payment_failures(world):
    world.emit("subscription.upserted", "2026-01-01T10:00", monthly())
    world.emit("payment.failed", "2026-01-20T10:00",
               {"source_id": "in_1", "subscription_source_id": "sub_1", "amount": 2500, "currency": "USD"})
    assert world.subscriber().stage == "at_risk"
    world.sweep("2026-01-31T06:00")   # day 30: "new" would have ended, but the failure holds
    s = world.subscriber()
    assert (s.stage, s.stage_reason) == ("at_risk", "payment failed 11 days ago")
