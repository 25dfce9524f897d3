"""Renewal reminders: offsets shorter than the interval, on the right shop-calendar day."""
import json
from datetime import date
from zoneinfo import ZoneInfo

import pytest

from hub.sync.rules import renewal
from hub.sync.rules.queries import sub_state
from hub.sync.rules.state import Window
from tests.hub.sync.rules.conftest import at, day, sub, tweak
from tests.samples import load_sample, stripe_event
from webhooks.stripe import webhook as stripe_hook


def fired(s, window, now, p):
    return [(d.rule, d.occasion) for d in renewal.reminders(s, window, now, p)]


@pytest.mark.parametrize("interval, count, offsets", [
    ("month", 1, [14, 7, 1]),         # a month may be 28 days: the 30-day reminder is dropped
    ("week", 1, [1]),
    ("week", 2, [7, 1]),
    ("month", 3, [30, 14, 7, 1]),
    ("year", 1, [30, 14, 7, 1]),
    ("day", 1, []),
])
def test_only_offsets_shorter_than_the_interval(p, interval, count, offsets):
    assert renewal.offsets(sub(interval=interval, interval_count=count), p) == offsets


@pytest.mark.parametrize("today, expected", [
    ("2026-11-23", []),                                              # the day before
    ("2026-11-24", [("renewal-7d", "2026-12-01/stripe:sub_1")]),     # the day of
    ("2026-11-25", []),                                              # the day after
])
def test_seven_days_before(p, today, expected):
    s = sub(next_renewal_at=at("2026-12-01T10:00"))
    assert fired(s, day(today), at(today + "T06:00"), p) == expected


def test_properties_carry_what_a_flow_needs(p):
    s = sub(next_renewal_at=at("2026-12-01T10:00"))
    (d,) = renewal.reminders(s, day("2026-11-30"), at("2026-11-30T06:00"), p)
    assert d.name == "Renewal Reminder"
    assert d.properties["days_before"] == 1
    assert d.properties["renewal_at"] == "2026-12-01T10:00:00+00:00"
    assert (d.properties["plan"], d.properties["amount"], d.properties["currency"]) == ("Coffee Monthly", 2500, "USD")
    assert d.properties["kind"] == "renewal"
    assert d.due_at == at("2026-11-30")
    shop = sub(source="shopify", source_id="77", next_renewal_at=at("2026-12-01T10:00"))
    assert renewal.reminders(shop, day("2026-11-30"), at("2026-11-30T06:00"), p)[0].properties["kind"] == "shipment"


@pytest.mark.parametrize("renewal_at, offset, due", [
    ("2028-03-01T12:00", 30, "2028-01-31"),   # leap year: February has 29 days
    ("2027-03-01T12:00", 30, "2027-01-30"),
    ("2026-03-31T12:00", 30, "2026-03-01"),   # month end
    ("2027-01-01T00:30", 1, "2026-12-31"),    # year end
    ("2028-03-01T12:00", 1, "2028-02-29"),    # leap day
])
def test_month_ends_and_leap_years(renewal_at, offset, due, p):
    s = sub(interval="year", next_renewal_at=at(renewal_at))
    got = fired(s, day(due), at(due + "T00:00"), p)
    assert (renewal.rule(offset), f"{renewal_at[:10]}/stripe:sub_1") in got


def test_days_are_the_shop_s_calendar_days():
    p = tweak(timezone="America/New_York")
    s = sub(next_renewal_at=at("2026-12-01T02:00"))   # still Nov 30 in New York
    ny = ZoneInfo("America/New_York")
    w = Window(date(2026, 11, 23), date(2026, 11, 23), ny)
    (d,) = renewal.reminders(s, w, at("2026-11-23T12:00"), p)
    assert d.occasion == "2026-11-30/stripe:sub_1"
    assert d.due_at == at("2026-11-23T05:00")       # local midnight, in UTC


@pytest.mark.parametrize("change", [
    dict(status="canceled"), dict(status="paused"), dict(status="trialing"),
    dict(cancel_at_period_end=True), dict(next_renewal_at=None),
])
def test_no_reminder_when_nothing_will_renew(p, change):
    s = sub(**{"next_renewal_at": at("2026-12-01T10:00"), **change})
    assert fired(s, day("2026-11-24"), at("2026-11-24T06:00"), p) == []


@pytest.mark.parametrize("pause_collection, expected", [
    (None, [("renewal-7d", "2017-03-08/stripe:sub_00000000000000")]),
    # Stripe leaves the status `active` while collection is paused
    # (https://docs.stripe.com/billing/subscriptions/pause-payment): nothing will be charged.
    ({"behavior": "keep_as_draft", "resumes_at": None}, []),
])
def test_a_stripe_subscription_with_paused_collection_gets_no_reminder(p, pause_collection, expected):
    obj = {**load_sample("shared:stripe/pay/subscription.created.json")["object"],
           "pause_collection": pause_collection}
    body = json.dumps(stripe_event("customer.subscription.updated", obj)).encode()
    envelope = stripe_hook.describe({}, body)
    [event] = stripe_hook.TOPICS[envelope.topic](json.loads(body), envelope)
    s = sub_state({**vars(sub(source_id="sub_00000000000000")), **event.data})
    assert fired(s, day("2017-03-01"), at("2017-03-01T06:00"), p) == expected


def test_no_reminder_once_the_renewal_passed(p):
    s = sub(next_renewal_at=at("2026-12-01T10:00"))
    assert fired(s, day("2026-11-30"), at("2026-12-01T11:00"), p) == []


def test_moved_date_cancels_the_rest_of_the_old_sequence(p):
    held = [("renewal-14d", "2026-12-01/stripe:sub_1", "fired")]
    moved = sub(next_renewal_at=at("2026-12-15T10:00"))
    cancel, reinstate = renewal.reconcile(moved, held, at("2026-11-20T09:00"), p)
    assert [(d.rule, d.occasion, d.status) for d in cancel] == [
        ("renewal-7d", "2026-12-01/stripe:sub_1", "cancelled"),
        ("renewal-1d", "2026-12-01/stripe:sub_1", "cancelled")]
    assert "renewal moved to 2026-12-15" in cancel[0].reason
    assert reinstate == []
    # Moved back: the cancelled reminders of that date are given back.
    held += [(d.rule, d.occasion, "cancelled") for d in cancel]
    back = sub(next_renewal_at=at("2026-12-01T10:00"))
    cancel2, reinstate2 = renewal.reconcile(back, held, at("2026-11-21T09:00"), p)
    assert cancel2 == [] and sorted(reinstate2) == [("renewal-1d", "2026-12-01/stripe:sub_1"),
                                                    ("renewal-7d", "2026-12-01/stripe:sub_1")]


def test_cancellation_cancels_pending_reminders(p):
    held = [("renewal-14d", "2026-12-01/stripe:sub_1", "fired"), ("renewal-7d", "2026-12-01/stripe:sub_1", "fired"),
            ("renewal-7d", "2026-12-01/stripe:sub_2", "fired")]
    ended = sub(status="canceled", next_renewal_at=None)
    cancel, _ = renewal.reconcile(ended, held, at("2026-11-26T09:00"), p)
    assert [(d.rule, d.occasion) for d in cancel] == [("renewal-1d", "2026-12-01/stripe:sub_1")]
    assert "subscription ended" in cancel[0].reason


def test_an_untouched_sequence_is_left_alone(p):
    held = [("renewal-14d", "2026-12-01/stripe:sub_1", "fired")]
    same = sub(next_renewal_at=at("2026-12-01T10:00"))
    assert renewal.reconcile(same, held, at("2026-11-20"), p) == ([], [])


def test_long_platform_ids_keep_occasions_short_and_distinct(p):
    a = sub(source_id="x" * 200 + "a", next_renewal_at=at("2026-12-01T10:00"))
    b = sub(source_id="x" * 200 + "b", next_renewal_at=at("2026-12-01T10:00"))
    (da,), (db,) = (renewal.reminders(s, day("2026-11-24"), at("2026-11-24T06:00"), p) for s in (a, b))
    assert len(da.occasion) <= 120 and da.occasion != db.occasion
    assert renewal.reconcile(a, [("renewal-14d", da.occasion, "fired")], at("2026-11-20"), p) == ([], [])


# --- Chargebee: a pause planned for the renewal date -----------------------------------------

def chargebee_events(world, topic: str) -> None:
    """One Chargebee webhook (tests/samples/chargebee/<topic>.json) through its normalizer."""
    from webhooks.chargebee import webhook as chargebee
    from webhooks.envelope import Envelope

    payload = load_sample(f"chargebee/{topic}.json")
    for event in chargebee.TOPICS[topic](payload, Envelope(event_id=payload["id"], topic=topic)):
        world.receive(event)


def renewal_reminders(world, renewal_date: str) -> list[tuple[str, str]]:
    """The reminders of one renewal: (rule, status)."""
    return [(rule, status) for name, rule, occasion, status in world.triggers()
            if name == "Renewal Reminder" and occasion.startswith(renewal_date)]


def test_a_pause_scheduled_for_the_renewal_date_sends_no_reminder_of_it(world):
    """"Subscription renewal reminder emails will not be sent to the customer during the pause
    period" (https://www.chargebee.com/docs/pause-subscription.html)."""
    chargebee_events(world, "subscription_renewed")          # renews on 2026-12-15
    chargebee_events(world, "subscription_pause_scheduled")  # 2026-11-24: pause then, resume 2027-02-14
    for n in range(25, 46):                                   # 2026-11-25 to 2026-12-15
        world.sweep(f"{date.fromordinal(date(2026, 11, 1).toordinal() + n - 1)}T06:00")
    assert renewal_reminders(world, "2026-12-15") == []


def test_a_scheduled_pause_called_off_brings_the_reminders_back(world):
    chargebee_events(world, "subscription_renewed")
    chargebee_events(world, "subscription_pause_scheduled")
    chargebee_events(world, "subscription_scheduled_pause_removed")  # 2026-11-25
    world.sweep("2026-12-01T06:00")
    assert renewal_reminders(world, "2026-12-15") == [("renewal-14d", "fired")]


# --- what the renewal will charge -------------------------------------------------------------

def reminder_amounts(world) -> list[tuple[str, int]]:
    from sqlalchemy import select

    from hub.models import Trigger

    with world.storage.session() as session:
        return [(t.rule, t.properties["amount"]) for t in session.scalars(
            select(Trigger).where(Trigger.name == "Renewal Reminder").order_by(Trigger.id))]


def test_a_reminder_names_what_the_platform_said_the_renewal_will_charge(world):
    """A price phase or a discount ending makes the renewal charge other than the price: Stripe's
    invoice.upcoming (amount_due), Recharge's queued charge and Chargebee's reminder say what."""
    from hub import events as ev
    from tests.hub.sync.rules.conftest import monthly

    world.emit(ev.SUBSCRIPTION_UPSERTED, "2026-01-01T10:00", monthly(renews="2026-03-01T10:00"))
    world.emit(ev.RENEWAL_UPCOMING, "2026-02-08T10:00", {"subscription_source_id": "sub_1",
                                                          "renewal_at": at("2026-03-01T10:00"),
                                                          "amount": 3200, "currency": "USD"})
    world.sweep("2026-02-15T06:00")   # 14 days before
    assert reminder_amounts(world) == [("renewal-14d", 3200)]
    # The price changes again after the notice: the notice's amount is outdated.
    world.emit(ev.SUBSCRIPTION_UPSERTED, "2026-02-16T10:00", monthly(renews="2026-03-01T10:00", amount=2800))
    world.sweep("2026-02-22T06:00")   # 7 days before
    assert reminder_amounts(world) == [("renewal-14d", 3200), ("renewal-7d", 2800)]


def test_a_notice_of_another_renewal_leaves_this_ones_price(world):
    from hub import events as ev
    from tests.hub.sync.rules.conftest import monthly

    world.emit(ev.SUBSCRIPTION_UPSERTED, "2026-01-01T10:00", monthly(renews="2026-03-01T10:00"))
    world.emit(ev.RENEWAL_UPCOMING, "2026-02-08T10:00", {"subscription_source_id": "sub_1",
                                                          "renewal_at": at("2026-03-01T10:00"),
                                                          "amount": 3200, "currency": "USD"})
    world.emit(ev.SUBSCRIPTION_UPSERTED, "2026-02-09T10:00", monthly(renews="2026-03-08T10:00"))  # moved
    world.sweep("2026-02-22T06:00")   # 14 days before the moved date
    assert reminder_amounts(world) == [("renewal-14d", 2500)]


def test_a_chargebee_change_for_the_terms_end_is_what_the_reminders_name(world):
    from tests.webhooks.chargebee.test_webhook import scheduled_bigger_bag
    from webhooks.chargebee import webhook as chargebee
    from webhooks.envelope import Envelope

    chargebee_events(world, "subscription_renewed")  # renews on 2026-12-15 for 47.00
    payload = {**load_sample("chargebee/subscription_changes_scheduled.json"), "_scheduled": scheduled_bigger_bag()}
    for event in chargebee.TOPICS["subscription_changes_scheduled"](payload, Envelope(event_id="e", topic="t")):
        world.receive(event)
    world.sweep("2026-12-01T06:00")
    assert reminder_amounts(world) == [("renewal-14d", 5600)]
    chargebee_events(world, "subscription_scheduled_changes_removed")
    world.sweep("2026-12-08T06:00")
    assert reminder_amounts(world) == [("renewal-14d", 5600), ("renewal-7d", 4700)]
