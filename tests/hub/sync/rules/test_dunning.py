"""Dunning: Payment Failed at once, retries 3/7/14 days on, reminders -3/0/+3, recovery in 21 days."""
from datetime import date, datetime, time, timedelta, timezone

import pytest
from sqlalchemy import select

from hub.jobs import run_time_rules
from hub.models import Trigger
from hub.sync.inbox import drain_inbox
from hub.sync.rules import dunning
from standins.stripe import FakeStripe
from tests.hub.sync.rules.conftest import at, day, payment, tweak
from tests.samples import load_sample, post, stripe_event, stripe_resource

FAILED_AT = "2026-03-10T09:00"


def names_on(pay, today, p):
    return sorted((d.name, d.properties.get("attempt"), d.properties.get("days_from_due"))
                  for d in dunning.due(pay, day(today), at(today + "T06:00"), p))


def test_payment_failed_at_once_with_the_update_link(p):
    d = dunning.failed(payment(), at(FAILED_AT), p)
    assert (d.name, d.rule, d.occasion) == ("Payment Failed", "payment-failed", "stripe:in_1")
    assert d.properties["update_payment_url"] == "https://billing.example/update"
    assert d.properties["retry_dates"] == ["2026-03-13", "2026-03-17", "2026-03-24"]
    assert (d.properties["amount"], d.properties["currency"], d.properties["plan"]) == (2500, "USD", "Coffee Monthly")


def test_link_falls_back_to_the_subscription(p):
    pay = payment(update_payment_url=None, subscription_update_payment_url="https://shop.example/account")
    assert dunning.failed(pay, at(FAILED_AT), p).properties["update_payment_url"] == "https://shop.example/account"


@pytest.mark.parametrize("today, expected", [
    ("2026-03-10", []),                                        # failure day: Payment Failed covers it
    ("2026-03-12", []),
    ("2026-03-13", [("Payment Reminder", 1, 0), ("Payment Retry Scheduled", 1, None)]),
    ("2026-03-14", [("Payment Reminder", 2, -3)]),
    ("2026-03-16", [("Payment Reminder", 1, 3)]),
    ("2026-03-17", [("Payment Reminder", 2, 0), ("Payment Retry Scheduled", 2, None)]),
    ("2026-03-20", [("Payment Reminder", 2, 3)]),
    ("2026-03-21", [("Payment Reminder", 3, -3)]),
    ("2026-03-24", [("Payment Reminder", 3, 0), ("Payment Retry Scheduled", 3, None)]),
    ("2026-03-27", [("Payment Reminder", 3, 3)]),
    ("2026-03-31", []),                                        # day 21: nothing more
])
def test_cadence(p, today, expected):
    assert names_on(payment(), today, p) == expected


def test_every_day_of_the_cadence_is_in_the_sweep_query(p):
    fires = {d for d in range(0, 30) if names_on(payment(), str((at(FAILED_AT) + timedelta(days=d)).date()), p)}
    assert fires == set(dunning.reminder_days(p))


def test_hard_decline_skips_retries_but_still_asks_for_a_card(p):
    pay = payment(hard_decline=True, decline_code="stolen_card")
    d = dunning.failed(pay, at(FAILED_AT), p)
    assert d.properties["retry_dates"] == [] and d.properties["action"] == "update_payment_method"
    assert names_on(pay, "2026-03-13", p) == [("Payment Reminder", 1, 0)]


@pytest.mark.parametrize("change", [dict(status="succeeded"), dict(subscription_status="canceled"),
                                    dict(first_failed_at=None)])
def test_nothing_for_a_closed_payment(p, change):
    pay = payment(**change)
    assert dunning.failed(pay, at(FAILED_AT), p) is None
    assert names_on(pay, "2026-03-13", p) == []


@pytest.mark.parametrize("paid_after, recovered", [(timedelta(days=21), True),
                                                   (timedelta(days=21, seconds=1), False)])
def test_recovered_within_21_days(p, paid_after, recovered):
    pay = payment(status="succeeded", paid_at=at(FAILED_AT) + paid_after)
    d = dunning.recovered(pay, p)
    assert (d is not None) == recovered
    if d:
        assert (d.name, d.occasion, d.properties["days_to_recover"]) == ("Payment Recovered", "stripe:in_1", 21)


def test_never_failed_is_not_a_recovery(p):
    assert dunning.recovered(payment(status="succeeded", first_failed_at=None, paid_at=at(FAILED_AT)), p) is None


def test_days_follow_the_shop_calendar():
    p = tweak(timezone="Pacific/Auckland")   # 2026-03-10T13:00Z is already Mar 11 there
    pay = payment(first_failed_at=at("2026-03-10T13:00"))
    assert dunning.failed(pay, at("2026-03-10T13:00"), p).properties["retry_dates"][0] == "2026-03-14"


def test_a_stolen_card_on_a_basil_invoice_gets_no_retry_promise(client, hub):
    """Stripe's invoice (API 2025-03-31) names no payment: the decline is on its payment's
    intent, fetched before the rules run, so Payment Failed promises no retry."""
    invoice = load_sample("shared:stripe/pay/invoice.payment_failed.json")["object"]
    intent = {**stripe_resource("payment_intent"), "id": "pi_renewal", "customer": "cus_1234",
              "last_payment_error": {"type": "card_error", "code": "card_declined",
                                     "decline_code": "stolen_card", "message": "Your card was declined."}}
    with FakeStripe(key="sk_test_declines") as api:
        api.add_invoice_payment(invoice, intent)
        hub.settings.STRIPE_API_KEY, hub.settings.STRIPE_API_BASE = "sk_test_declines", api.url
        post(client, "stripe", stripe_event("invoice.payment_failed", invoice, created=invoice["created"]))
        drain_inbox(hub.storage, hub.settings)
    with hub.storage.session() as s:
        [failed] = s.scalars(select(Trigger).where(Trigger.name == "Payment Failed")).all()
    props = failed.properties
    assert (props["decline_code"], props["hard_decline"]) == ("stolen_card", True)
    assert (props["retry_dates"], props["action"]) == ([], "update_payment_method")
    assert "hard decline" in failed.reason


# --- notify mode follows the platform's retry schedule -------------------------------------

PLATFORM_RETRY = at("2026-03-15T04:00")  # the platform's next attempt, not the hub's day 3


def test_notify_mode_follows_the_platforms_next_attempt(p):
    pay = payment(next_retry_at=PLATFORM_RETRY)
    assert p.dunning.mode == "notify"
    d = dunning.failed(pay, at(FAILED_AT), p)
    assert (d.properties["retry_dates"], d.properties["action"]) == (["2026-03-15"], "retry_scheduled")
    assert d.properties["platform_next_retry_at"] == "2026-03-15T04:00:00+00:00"
    assert names_on(pay, "2026-03-12", p) == [("Payment Reminder", 1, -3)]
    assert names_on(pay, "2026-03-13", p) == []            # the hub's own day 3: nothing
    assert names_on(pay, "2026-03-15", p) == [("Payment Reminder", 1, 0), ("Payment Retry Scheduled", 1, None)]
    assert names_on(pay, "2026-03-18", p) == [("Payment Reminder", 1, 3)]


def test_a_chargebee_retry_is_numbered_by_its_attempts(p):
    # Chargebee's dunning_attempts count the first charge: 2 attempts made, the next is retry 2.
    pay = payment(source="chargebee", source_id="1057", attempt_count=2, next_retry_at=at("2026-03-20T15:00"))
    [retry] = [d for d in dunning.due(pay, day("2026-03-20"), at("2026-03-20T06:00"), p)
               if d.name == "Payment Retry Scheduled"]
    assert (retry.occasion, retry.properties["retry_on"]) == ("chargebee:1057/retry-2", "2026-03-20")


def test_a_platform_retry_past_the_hubs_window_is_still_followed(p):
    pay = payment(next_retry_at=at("2026-04-20T09:00"))   # Smart Retries may run for 2 months
    assert ("Payment Retry Scheduled", 1, None) in names_on(pay, "2026-04-20", p)


def test_orchestrate_mode_keeps_the_hubs_cadence():
    p = tweak(**{"dunning.mode": "orchestrate"})
    pay = payment(next_retry_at=PLATFORM_RETRY)
    assert dunning.failed(pay, at(FAILED_AT), p).properties["retry_dates"] == ["2026-03-13", "2026-03-17", "2026-03-24"]
    assert names_on(pay, "2026-03-15", p) == []


def test_without_a_platform_date_the_hubs_cadence_is_the_fallback(p):
    assert dunning.failed(payment(next_retry_at=None), at(FAILED_AT), p).properties["retry_dates"] == [
        "2026-03-13", "2026-03-17", "2026-03-24"]


def test_retries_exhausted_ends_dunning_in_notify_mode(p):
    pay = payment(status="retries_exhausted")
    d = dunning.failed(pay, at(FAILED_AT), p)
    assert (d.properties["retry_dates"], d.properties["action"]) == ([], "update_payment_method")
    assert all(names_on(pay, f"2026-03-{n:02d}", p) == [] for n in range(11, 31))
    # In orchestrate mode the hub asks for the retries: the platform scheduling none is expected.
    orchestrated = tweak(**{"dunning.mode": "orchestrate"})
    assert ("Payment Retry Scheduled", 1, None) in names_on(pay, "2026-03-13", orchestrated)


def sweep(hub, first, days):
    """`hub sweep` every simulated morning: what fired, by day."""
    fired = {}
    for n in range(days):
        morning = datetime.combine(first + timedelta(days=n), time(6), tzinfo=timezone.utc)
        if run_time_rules(hub, morning).get("dunning"):
            fired[morning.date().isoformat()] = True
    return sorted(fired)


@pytest.mark.parametrize("event_type, change", [
    ("invoice.payment_failed", {"attempt_count": 2, "next_payment_attempt": None}),  # Stripe gave up
    ("invoice.marked_uncollectible", {"status": "uncollectible", "next_payment_attempt": None}),
    ("invoice.voided", {"status": "void", "next_payment_attempt": None}),
])
def test_the_platform_ending_collection_ends_dunning(client, hub, event_type, change):
    invoice = load_sample("shared:stripe/pay/invoice.payment_failed.json")["object"]
    failed_on = datetime.fromtimestamp(invoice["created"], timezone.utc).date()
    post(client, "stripe", stripe_event("invoice.payment_failed", invoice, event_id="evt_1",
                                        created=invoice["created"]))
    post(client, "stripe", stripe_event(event_type, {**invoice, **change}, event_id="evt_2",
                                        created=invoice["created"] + 3600))
    drain_inbox(hub.storage, hub.settings)
    assert sweep(hub, failed_on + timedelta(days=1), 30) == []
    with hub.storage.session() as s:
        [failed] = s.scalars(select(Trigger).where(Trigger.rule == dunning.FAILED)).all()
    assert failed.properties["retry_dates"] == ["2025-04-25"]  # what Stripe announced at first


def test_chargebee_next_retry_at_schedules_the_reminder(client, hub):
    payload = load_sample("chargebee/payment_failed.json")   # next_retry_at 2026-12-23T15:00Z
    post(client, "chargebee", payload)
    drain_inbox(hub.storage, hub.settings)
    assert sweep(hub, date(2026, 12, 16), 14) == ["2026-12-20", "2026-12-23", "2026-12-26"]
    with hub.storage.session() as s:
        retry = s.scalars(select(Trigger).where(Trigger.rule == dunning.RETRY)).one()
    assert (retry.occasion, retry.properties["retry_on"]) == ("chargebee:1057/retry-2", "2026-12-23")


def test_the_sweep_finds_a_platform_retry_past_the_hubs_cadence(client, hub):
    """Smart Retries may try a month on: the reminder and the retry day still fire."""
    invoice = load_sample("shared:stripe/pay/invoice.payment_failed.json")["object"]
    failed_on = datetime.fromtimestamp(invoice["created"], timezone.utc).date()
    retry_on = failed_on + timedelta(days=30)
    later = {**invoice, "next_payment_attempt": int(datetime.combine(retry_on, time(9), timezone.utc).timestamp())}
    post(client, "stripe", stripe_event("invoice.payment_failed", later, created=invoice["created"]))
    drain_inbox(hub.storage, hub.settings)
    assert sweep(hub, failed_on + timedelta(days=1), 35) == [
        (retry_on - timedelta(days=3)).isoformat(), retry_on.isoformat(), (retry_on + timedelta(days=3)).isoformat()]
