"""Lifecycle moments through the real webhook endpoints, as the email tools receive them:
exact triggers and properties for cancellations (why, and whether the subscriber chose to
leave), plan changes, pauses, skips, scheduled ends and card updates, on Stripe, Chargebee
and Recharge."""
from __future__ import annotations

import copy
import shutil
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from hub.jobs import run_time_rules
from hub.models import CustomerLink, InboxEvent, Subscriber, Trigger
from hub.ops import reconcile
from hub.sync.inbox import drain_inbox
from hub.sync.rules import queries
from standins.shopify import CONTRACT_SCOPES, FakeShopifyAdmin
from standins.stripe import FakeStripe
from tests.samples import SAMPLE_CONTRACT, load_sample, post, stripe_event, stripe_schedule

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

PROJECT = Path(__file__).resolve().parents[1]

UTC = timezone.utc
T0 = int(datetime(2026, 3, 1, 10, tzinfo=UTC).timestamp())
DAY = 86400


def fired(hub, name: str) -> list[dict]:
    with hub.storage.session() as s:
        return [t.properties for t in s.scalars(select(Trigger).where(Trigger.name == name, Trigger.status == "fired")
                                                 .order_by(Trigger.id))]


def send(client, hub, source: str, payload: dict, topic: str | None = None, **signing) -> None:
    assert post(client, source, payload, topic=topic, **signing).status_code == 200
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


def test_a_shopify_contract_whose_billing_failed_for_good_ends_it_involuntarily(client, hub):
    """FAILED: "The contract has ended because billing failed and no further billing attempts
    are expected" (SubscriptionContractSubscriptionStatus)."""
    created = load_sample("shopify/subscription_contracts_create.json")
    send(client, hub, "shopify", created, topic="subscription_contracts/create")
    failed = {**load_sample("shopify/subscription_contracts_fail.json"), "id": created["id"],
              "admin_graphql_api_id": created["admin_graphql_api_id"]}
    assert post(client, "shopify", failed, topic="subscription_contracts/fail", webhook_id="wh-fail").status_code == 200
    drain_inbox(hub.storage, hub.settings)
    [props] = fired(hub, "Subscription Cancelled")
    assert (props["status"], props["churn_type"]) == ("canceled", "involuntary")
    with hub.storage.session() as s:
        [contract] = s.scalar(select(Subscriber)).subscriptions
        assert (contract.status, contract.next_renewal_at) == ("canceled", None)


# --- 2. plan changes --------------------------------------------------------------------------

def proration_invoice(lines: list[tuple[int, bool]]) -> dict:
    """The invoice Stripe makes for a change with proration_behavior=always_invoice (API
    2025-03-31 shape: the proration flag under parent.subscription_item_details)."""
    return {"id": "in_change", "object": "invoice", "billing_reason": "subscription_update", "currency": "usd",
            "lines": {"object": "list", "data": [
                {"id": f"il_{i}", "object": "line_item", "amount": amount, "currency": "usd",
                 "parent": {"type": "subscription_item_details",
                            "subscription_item_details": {"proration": proration, "subscription": "sub_m1",
                                                          "subscription_item": "si_sub_m1"}}}
                for i, (amount, proration) in enumerate(lines)]}}


def test_stripe_upgrade_mid_cycle_fires_plan_changed_with_stripes_own_proration(client, hub):
    stripe_send(client, hub, "customer.subscription.created", stripe_subscription(), 1, T0)
    # Mid-cycle, 15 of 31 days left: Stripe credits the unused 25.00 (-1210) and charges
    # the rest of the period on 40.00 (1935): 725 net, read from its invoice, never worked out.
    changed = stripe_subscription(price=("price_p", "Coffee Plus", 4000),
                                  latest_invoice=proration_invoice([(-1210, True), (1935, True), (4000, False)]))
    previous = {"items": stripe_subscription()["items"]}
    stripe_send(client, hub, "customer.subscription.updated", changed, 2, T0 + 16 * DAY, previous)
    [props] = fired(hub, "Plan Changed")
    assert {k: props[k] for k in ("previous_plan", "plan", "previous_amount", "amount", "currency", "direction",
                                  "effective_at", "proration_amount")} == {
        "previous_plan": "Coffee Monthly", "plan": "Coffee Plus", "previous_amount": 2500, "amount": 4000,
        "currency": "USD", "direction": "upgrade",
        "effective_at": datetime.fromtimestamp(T0 + 16 * DAY, UTC).isoformat(), "proration_amount": 725}


@pytest.fixture
def stripe_api(hub):
    """Stripe's API stand-in, where the worker reads what a change billed."""
    with FakeStripe(key="sk_test_prorate") as api:
        hub.settings.STRIPE_API_KEY, hub.settings.STRIPE_API_BASE = "sk_test_prorate", api.url
        # The subscription's latest invoice is the last renewal's, not one the change made.
        api.invoices.insert(0, {"id": "in_renewal", "object": "invoice", "billing_reason": "subscription_cycle",
                                "currency": "usd", "lines": {"object": "list", "data": []}})
        yield api


def test_stripe_change_with_default_prorations_reads_the_items_left_for_the_next_invoice(client, hub, stripe_api):
    stripe_send(client, hub, "customer.subscription.created", stripe_subscription(), 1, T0)
    changed = stripe_subscription(price=("price_p", "Coffee Plus", 4000), latest_invoice="in_renewal")
    # proration_behavior=create_prorations: no invoice now, two pending items (the unused
    # 25.00 credited, the rest of the period on 40.00 charged); an earlier change's item and
    # another subscription's are not this change's.
    stripe_api.prorate(changed, [-1210, 1935], T0 + 16 * DAY - 1)
    stripe_api.prorate(changed, [-300], T0 + 6 * DAY)
    stripe_api.prorate({**changed, "id": "sub_other"}, [999], T0 + 16 * DAY)
    stripe_send(client, hub, "customer.subscription.updated", changed, 2, T0 + 16 * DAY,
                {"items": stripe_subscription()["items"]})
    [props] = fired(hub, "Plan Changed")
    assert (props["direction"], props["proration_amount"]) == ("upgrade", 725)


def test_stripe_downgrade_without_proration_has_none(client, hub, stripe_api):
    stripe_send(client, hub, "customer.subscription.created", stripe_subscription(), 1, T0)
    changed = stripe_subscription(price=("price_l", "Coffee Lite", 1500), latest_invoice="in_renewal")
    stripe_send(client, hub, "customer.subscription.updated", changed, 2, T0 + 3 * DAY,
                {"items": stripe_subscription()["items"]})
    [props] = fired(hub, "Plan Changed")
    assert (props["direction"], props["previous_amount"], props["amount"], props["proration_amount"]) == (
        "downgrade", 2500, 1500, None)


def coffee_schedule(status="active", under_way=0, prices=("price_m", "price_p"), **extra) -> dict:
    """A schedule of the subscription: a phase a period (31 days from T0) for each of `prices`
    (named by id), phase `under_way` under way."""
    phases = [(T0 + n * 31 * DAY, T0 + (n + 1) * 31 * DAY, price, []) for n, price in enumerate(prices)]
    return stripe_schedule("sub_m1", "cus_m1", phases, under_way=under_way, id="sub_sched_m1", status=status, **extra)


def coffee_prices(api, subscription: dict) -> None:
    monthly = subscription["items"]["data"][0]["price"]
    api.prices = {"price_m": monthly, "price_p": {**monthly, "id": "price_p", "nickname": "Coffee Plus",
                                                  "unit_amount": 4000},
                  "price_x": {**monthly, "id": "price_x", "nickname": "Coffee Max", "unit_amount": 5500}}


def test_a_stripe_schedule_that_changes_the_price_at_the_renewal_is_reminded_at_the_new_price(
        client, hub, stripe_api):
    """A subscription schedule moves Coffee Monthly (25.00) to Coffee Plus (40.00) when this
    period ends: the 14-day reminder names 40.00. Released, the subscription keeps its own
    items, and the 7-day reminder names 25.00."""
    subscription = stripe_subscription(schedule="sub_sched_m1")
    stripe_api.subscriptions = [subscription]
    coffee_prices(stripe_api, subscription)
    stripe_send(client, hub, "customer.subscription.created", subscription, 1, T0)
    stripe_api.subscription_schedules["sub_sched_m1"] = coffee_schedule()
    stripe_send(client, hub, "subscription_schedule.created", coffee_schedule(), 2, T0 + DAY)
    sweep_on(hub, 17)
    released = coffee_schedule(status="released", subscription=None, released_subscription="sub_m1")
    stripe_api.subscription_schedules["sub_sched_m1"] = released
    stripe_send(client, hub, "subscription_schedule.released", released, 3, T0 + 20 * DAY)
    sweep_on(hub, 24)
    assert [(r["days_before"], r["amount"]) for r in fired(hub, "Renewal Reminder")] == [(14, 4000), (7, 2500)]


def test_a_stripe_subscription_renewed_into_its_schedules_next_phase_is_reminded_of_the_phase_after(
        client, hub, stripe_api):
    """Three phases: Coffee Monthly, then Plus (40.00), then Max (55.00). Once the subscription
    renews into Plus (customer.subscription.updated, its items changed), the next renewal's
    reminders name Max's price, read from the schedule with the subscription's change."""
    subscription = stripe_subscription(schedule="sub_sched_m1")
    coffee_prices(stripe_api, subscription)
    prices = ("price_m", "price_p", "price_x")
    stripe_api.subscription_schedules["sub_sched_m1"] = coffee_schedule(prices=prices)
    stripe_api.subscriptions = [subscription]
    stripe_send(client, hub, "customer.subscription.created", subscription, 1, T0)
    sweep_on(hub, 17)  # 14 days before the first renewal: the schedule was read with the subscription
    renewed = stripe_subscription(price=("price_p", "Coffee Plus", 4000), schedule="sub_sched_m1")
    renewed["items"]["data"][0].update(current_period_start=T0 + 31 * DAY, current_period_end=T0 + 62 * DAY)
    stripe_api.subscription_schedules["sub_sched_m1"] = coffee_schedule(prices=prices, under_way=1)
    stripe_send(client, hub, "customer.subscription.updated", renewed, 2, T0 + 31 * DAY,
                {"items": subscription["items"]})
    sweep_on(hub, 48)  # 14 days before the second
    assert [(r["renewal_date"], r["amount"]) for r in fired(hub, "Renewal Reminder")] == [
        ("2026-04-01", 4000), ("2026-05-02", 5500)]


def test_stripes_own_preview_of_a_scheduled_renewal_stands_through_a_change_that_moves_nothing(
        client, hub, stripe_api):
    """invoice.upcoming says what the renewal charges to the cent (here with a discount); a later
    change of the subscription's metadata neither reads the schedule again nor replaces it."""
    subscription = stripe_subscription(schedule="sub_sched_m1")
    coffee_prices(stripe_api, subscription)
    stripe_api.subscription_schedules["sub_sched_m1"] = coffee_schedule()
    stripe_api.subscriptions = [subscription]
    stripe_send(client, hub, "customer.subscription.created", subscription, 1, T0)
    preview = {"object": "invoice", "id": None, "customer": "cus_m1", "currency": "usd", "amount_due": 3600,
               "period_end": T0 + 31 * DAY, "parent": {"subscription_details": {"subscription": "sub_m1"}}}
    stripe_send(client, hub, "invoice.upcoming", preview, 2, T0 + 10 * DAY)
    stripe_send(client, hub, "customer.subscription.updated", {**subscription, "metadata": {"gift": "yes"}}, 3,
                T0 + 12 * DAY, {"metadata": {}})
    sweep_on(hub, 17)
    assert [r["amount"] for r in fired(hub, "Renewal Reminder")] == [3600]
    assert len(stripe_api.operations("get_subscription_schedule")) == 1


def test_a_stripe_change_that_waited_for_its_payment_fires_plan_changed_once_applied(client, hub, stripe_api):
    """payment_behavior=pending_if_incomplete: the upgrade waits in `pending_update` while its
    invoice is unpaid; customer.subscription.pending_update_applied then tells of the
    subscription as changed (https://docs.stripe.com/billing/subscriptions/pending-updates)."""
    stripe_send(client, hub, "customer.subscription.created", stripe_subscription(), 1, T0)
    waiting = {"expires_at": T0 + 4 * DAY, "billing_cycle_anchor": None, "trial_end": None,
               "subscription_items": stripe_subscription(price=("price_p", "Coffee Plus", 4000))["items"]["data"]}
    stripe_send(client, hub, "customer.subscription.updated", stripe_subscription(pending_update=waiting), 2,
                T0 + 3 * DAY, {"pending_update": None})
    assert fired(hub, "Plan Changed") == []  # nothing changed while the invoice is unpaid
    applied = stripe_subscription(price=("price_p", "Coffee Plus", 4000), latest_invoice="in_renewal",
                                  pending_update=None)
    stripe_send(client, hub, "customer.subscription.pending_update_applied", applied, 3, T0 + 3 * DAY + 600,
                {"items": stripe_subscription()["items"], "pending_update": waiting})
    [props] = fired(hub, "Plan Changed")
    assert (props["direction"], props["previous_amount"], props["amount"]) == ("upgrade", 2500, 4000)


def test_a_renewal_that_changes_nothing_of_the_plan_fires_no_plan_changed(client, hub):
    stripe_send(client, hub, "customer.subscription.created", stripe_subscription(), 1, T0)
    renewed = stripe_subscription()
    stripe_send(client, hub, "customer.subscription.updated", renewed, 2, T0 + 31 * DAY,
                {"current_period_start": T0 - 31 * DAY})
    assert fired(hub, "Plan Changed") == []


def test_chargebee_change_reads_the_invoice_and_credit_note_it_made(client, hub):
    send(client, hub, "chargebee", load_sample("chargebee/subscription_created.json"))
    payload = copy.deepcopy(load_sample("chargebee/subscription_changed.json"))
    sub = payload["content"]["subscription"]
    before = load_sample("chargebee/subscription_created.json")["content"]["subscription"]
    plan = next(i for i in sub["subscription_items"] if i["item_type"] == "plan")
    plan.update(item_price_id="Coffee-Club-USD-Every-3-months", unit_price=plan["unit_price"] * 3,
                amount=plan["unit_price"] * 3 * plan.get("quantity", 1))
    sub["resource_version"] = before["resource_version"] + 1000
    sub["updated_at"] = before["updated_at"] + 86400
    # Shapes of an invoice and a credit note (https://apidocs.chargebee.com/docs/api/invoices,
    # .../credit_notes): the change charged 30.00 and credited 12.00 of the old plan.
    payload["content"]["invoice"] = {"id": "inv_9", "subscription_id": sub["id"], "total": 3000,
                                     "currency_code": sub["currency_code"], "status": "paid"}
    payload["content"]["credit_notes"] = [{"id": "cn_9", "subscription_id": sub["id"], "total": 1200,
                                           "type": "adjustment", "reason_code": "subscription_change"}]
    send(client, hub, "chargebee", payload)
    [props] = fired(hub, "Plan Changed")
    old_plan = next(i for i in before["subscription_items"] if i["item_type"] == "plan")["item_price_id"]
    assert (props["previous_plan"], props["plan"], props["direction"], props["proration_amount"]) == (
        old_plan, "Coffee-Club-USD-Every-3-months", "upgrade", 1800)


# --- 3. pauses and skips ------------------------------------------------------------------------

def iso_of(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def test_chargebee_pause_names_its_resume_date_and_the_resume_fires_once(client, hub):
    send(client, hub, "chargebee", load_sample("chargebee/subscription_created.json"))
    paused = load_sample("chargebee/subscription_paused.json")
    send(client, hub, "chargebee", paused)
    send(client, hub, "chargebee", load_sample("chargebee/subscription_resumed.json"))
    [pause] = fired(hub, "Subscription Paused")
    assert (pause["resumes_at"], pause["paused_at"], pause["status"]) == (
        # When Chargebee changed it: its resource_version, in milliseconds.
        iso_of(1800198000), iso_of(paused["content"]["subscription"]["resource_version"] / 1000), "paused")
    [resume] = fired(hub, "Subscription Resumed")
    assert (resume["status"], resume["next_renewal_at"]) == ("active", iso_of(1800198000))


def test_stripe_pause_collection_pauses_and_its_clearing_resumes_with_no_reminder_meanwhile(client, hub):
    stripe_send(client, hub, "customer.subscription.created", stripe_subscription(), 1, T0)
    resumes = T0 + 62 * DAY
    stripe_send(client, hub, "customer.subscription.updated", stripe_subscription(pause_collection={
        "behavior": "void", "resumes_at": resumes}), 2, T0 + 2 * DAY, {"pause_collection": None})
    # 7 and 1 days before the period's end (T0 + 31 days): a paused cycle gets no reminder.
    for day in (24, 30):
        run_time_rules(hub, datetime.fromtimestamp(T0 + day * DAY, UTC).replace(hour=6))
    assert fired(hub, "Renewal Reminder") == []
    stripe_send(client, hub, "customer.subscription.updated", stripe_subscription(), 3, T0 + 40 * DAY,
                {"pause_collection": {"behavior": "void", "resumes_at": resumes}})
    [pause] = fired(hub, "Subscription Paused")
    [resume] = fired(hub, "Subscription Resumed")
    assert (pause["resumes_at"], resume["resumed_at"]) == (iso_of(resumes), iso_of(T0 + 40 * DAY))


def test_stripe_pause_with_a_resume_date_reminds_of_the_first_renewal_after_it(client, hub):
    # Billed on the 1st (anchor T0 = 1 March); collection paused until 2 May: the renewals of
    # 1 April and 1 May are not collected, the first one after the resume is 1 June.
    stripe_send(client, hub, "customer.subscription.created", stripe_subscription(billing_cycle_anchor=T0), 1, T0)
    resumes = int(datetime(2026, 5, 2, 10, tzinfo=UTC).timestamp())
    stripe_send(client, hub, "customer.subscription.updated", stripe_subscription(
        billing_cycle_anchor=T0, pause_collection={"behavior": "void", "resumes_at": resumes}), 2, T0 + 2 * DAY,
        {"pause_collection": None})
    [pause] = fired(hub, "Subscription Paused")
    assert (pause["resumes_at"], pause["next_renewal_at"]) == (iso_of(resumes), "2026-06-01T10:00:00+00:00")
    for day in ("2026-03-25", "2026-04-24", "2026-05-18", "2026-05-25"):  # 7 days before each renewal
        run_time_rules(hub, datetime.fromisoformat(day).replace(hour=6, tzinfo=UTC))
    assert [(r["renewal_date"], r["days_before"]) for r in fired(hub, "Renewal Reminder")] == [
        ("2026-06-01", 14), ("2026-06-01", 7)]


def test_chargebee_pause_past_the_term_reminds_of_the_resume_date_where_it_renews(client, hub):
    send(client, hub, "chargebee", load_sample("chargebee/subscription_created.json"))
    send(client, hub, "chargebee", load_sample("chargebee/subscription_paused.json"))
    resumes = datetime.fromtimestamp(1800198000, UTC)  # after the term's end: it renews on resuming
    run_time_rules(hub, resumes.replace(hour=6) - timedelta(days=7))
    assert [(r["renewal_at"], r["days_before"], r["status"]) for r in fired(hub, "Renewal Reminder")] == [
        (resumes.isoformat(), 7, "paused")]


def test_recharge_pause_resumes_on_its_next_charge_date_and_is_reminded_of_it(client, hub):
    sub = copy.deepcopy(load_sample("shared:recharge/subscription.json"))
    sub["subscription"].update(order_interval_unit="month", order_interval_frequency=1, charge_interval_frequency=1)
    send(client, hub, "recharge", sub, topic="subscription/created")
    paused = copy.deepcopy(sub)
    paused["subscription"].update(status="paused", next_charge_scheduled_at="2022-06-09",
                                  updated_at="2022-03-20T09:00:00+00:00")
    send(client, hub, "recharge", paused, topic="subscription/paused")
    [pause] = fired(hub, "Subscription Paused")
    assert (pause["resumes_at"], pause["next_renewal_at"]) == ("2022-06-09T04:00:00+00:00",) * 2  # midnight ET
    run_time_rules(hub, datetime(2022, 4, 2, 6, tzinfo=UTC))  # 7 days before the paused charge
    run_time_rules(hub, datetime(2022, 6, 2, 6, tzinfo=UTC))  # 7 days before the resume
    assert [(r["renewal_date"], r["days_before"]) for r in fired(hub, "Renewal Reminder")] == [
        ("2022-06-09", 14), ("2022-06-09", 7)]


def test_a_subscription_stripe_stops_collecting_after_failed_retries_is_not_paused_by_the_subscriber(client, hub):
    stripe_send(client, hub, "customer.subscription.created", stripe_subscription(status="past_due"), 1, T0)
    stripe_send(client, hub, "customer.subscription.updated", stripe_subscription(status="unpaid"), 2, T0 + DAY)
    stripe_send(client, hub, "customer.subscription.updated", stripe_subscription(), 3, T0 + 2 * DAY)
    assert (fired(hub, "Subscription Paused"), fired(hub, "Subscription Resumed")) == ([], [])


def recharge_skip(client, hub) -> dict:
    """A monthly Recharge subscription renewing 2022-04-09 whose renewal is skipped to 2022-05-09;
    the subscription as subscription/skipped carried it."""
    sub = copy.deepcopy(load_sample("shared:recharge/subscription.json"))
    sub["subscription"].update(order_interval_unit="month", order_interval_frequency=1, charge_interval_frequency=1)
    send(client, hub, "recharge", sub, topic="subscription/created")
    skipped = copy.deepcopy(sub)
    skipped["subscription"].update(next_charge_scheduled_at="2022-05-09", updated_at="2022-03-20T09:00:00+00:00")
    send(client, hub, "recharge", skipped, topic="subscription/skipped")
    return skipped


def test_recharge_skip_fires_renewal_skipped_and_the_reminders_follow_the_new_date(client, hub):
    recharge_skip(client, hub)
    [skip] = fired(hub, "Renewal Skipped")
    assert (skip["skipped_renewal_at"], skip["next_renewal_at"]) == (
        "2022-04-09T04:00:00+00:00", "2022-05-09T04:00:00+00:00")
    run_time_rules(hub, datetime(2022, 4, 2, 6, tzinfo=UTC))  # 7 days before the skipped date
    assert fired(hub, "Renewal Reminder") == []
    run_time_rules(hub, datetime(2022, 5, 2, 6, tzinfo=UTC))  # catches up the 14-day reminder too
    assert sorted((r["renewal_date"], r["days_before"]) for r in fired(hub, "Renewal Reminder")) == [
        ("2022-05-09", 7), ("2022-05-09", 14)]


def test_a_recharge_subscription_changed_after_a_skip_is_processed_with_the_reminders_of_its_new_date(client, hub):
    more = copy.deepcopy(recharge_skip(client, hub))
    more["subscription"].update(quantity=2, updated_at="2022-03-21T09:00:00+00:00")
    send(client, hub, "recharge", more, topic="subscription/updated")
    with hub.storage.session() as s:
        assert [r.status for r in s.scalars(select(InboxEvent).order_by(InboxEvent.id))] == ["processed"] * 3
    for when in (datetime(2022, 4, 25, 6, tzinfo=UTC), datetime(2022, 5, 2, 6, tzinfo=UTC)):  # 14, 7 days before
        run_time_rules(hub, when)
    assert sorted((r["renewal_date"], r["days_before"]) for r in fired(hub, "Renewal Reminder")) == [
        ("2022-05-09", 7), ("2022-05-09", 14)]


def noon_in(days: int) -> datetime:
    return (datetime.now(UTC) + timedelta(days=days)).replace(hour=12, minute=0, second=0, microsecond=0)


def shopify_contract(client, hub, admin, next_billing: datetime) -> None:
    """The hub's app owns the store's contracts; SAMPLE_CONTRACT, billing every 4 weeks from
    `next_billing` (its first cycle), is created."""
    admin.hold(SAMPLE_CONTRACT, nextBillingDate=next_billing.strftime("%Y-%m-%dT%H:%M:%SZ"))
    hub.settings = replace(hub.settings, SHOPIFY_SHOP="example.myshopify.com", SHOPIFY_ACCESS_TOKEN="shpat_skip",
                           SHOPIFY_ADMIN_URL=admin.url, SHOPIFY_OWNS_CONTRACTS=True)
    send(client, hub, "shopify", load_sample("shopify/subscription_contracts_create.json"),
         topic="subscription_contracts/create", webhook_id="wh-create")


def shopify_skip(client, hub, admin, next_billing: datetime, cycle: int) -> None:
    """shopify_contract, then the customer skips one of its cycles."""
    shopify_contract(client, hub, admin, next_billing)
    send(client, hub, "shopify", admin.skip(SAMPLE_CONTRACT, cycle), topic="subscription_billing_cycles/skip",
         webhook_id="wh-skip")


def shopify_three_shirts(client, hub, admin, next_billing: datetime) -> None:
    """shopify_contract (2 × 24.99 CAD), then the customer takes three shirts for its first
    delivery alone (a billing cycle contract edit)."""
    shopify_contract(client, hub, admin, next_billing)
    three = [{"quantity": 3, "currentPrice": {"amount": "24.99", "currencyCode": "CAD"}}]
    send(client, hub, "shopify", admin.edit_lines(SAMPLE_CONTRACT, 1, three),
         topic="subscription_billing_cycle_edits/create", webhook_id="wh-edit")


def test_a_skipped_shopify_delivery_fires_renewal_skipped_and_its_reminders_go_to_the_next_cycle(client, hub):
    """A skip leaves the contract's nextBillingDate as it was ("managed by the apps"): the hub
    reads the contract's billing cycles, and the first one not skipped is the next renewal."""
    nxt = noon_in(20)
    with FakeShopifyAdmin(token="shpat_skip", owns_contracts=True) as admin:
        shopify_skip(client, hub, admin, nxt, cycle=1)
        [skip] = fired(hub, "Renewal Skipped")
        assert (skip["skipped_renewal_at"], skip["next_renewal_at"]) == (
            nxt.isoformat(), (nxt + timedelta(weeks=4)).isoformat())
        run_time_rules(hub, nxt - timedelta(days=14))
        assert fired(hub, "Renewal Reminder") == []  # none for the skipped delivery
        # A later change of the contract (its nextBillingDate still the skipped date) keeps the skip.
        send(client, hub, "shopify", {**load_sample("shopify/subscription_contracts_update.json"),
                                      "id": 402440842, "admin_graphql_api_id": SAMPLE_CONTRACT},
             topic="subscription_contracts/update", webhook_id="wh-update")
        with hub.storage.session() as s:
            [contract] = s.scalar(select(Subscriber)).subscriptions
            assert contract.next_renewal_at == nxt + timedelta(weeks=4)
        # The customer takes the delivery after all: its reminders come back, no second skip.
        send(client, hub, "shopify", admin.skip(SAMPLE_CONTRACT, 1, skipped=False),
             topic="subscription_billing_cycles/unskip", webhook_id="wh-unskip")
        run_time_rules(hub, nxt - timedelta(days=7))
    assert [(r["renewal_date"], r["days_before"]) for r in fired(hub, "Renewal Reminder")] == [
        (nxt.date().isoformat(), 7)]
    assert len(fired(hub, "Renewal Skipped")) == 1


def test_a_shopify_contract_first_read_by_its_ids_then_whole_fires_no_plan_changed(client, hub):
    """Before Shopify approves the contract scopes, a contract webhook is applied by its ids
    alone; once they are approved the next one reads the contract whole. The plan is learned
    then, not changed: no Plan Changed email, and the person gets the contract's email."""
    nxt = noon_in(20)
    with FakeShopifyAdmin(token="shpat_skip", owns_contracts=True) as admin:
        admin.scopes -= CONTRACT_SCOPES
        shopify_contract(client, hub, admin, nxt)
        with hub.storage.session() as s:
            person = s.scalar(select(Subscriber))
            assert person.email is None and person.subscriptions[0].plan is None
        admin.scopes |= CONTRACT_SCOPES
        send(client, hub, "shopify", {**load_sample("shopify/subscription_contracts_update.json"),
                                      "id": 402440842, "admin_graphql_api_id": SAMPLE_CONTRACT},
             topic="subscription_contracts/update", webhook_id="wh-update")
        with hub.storage.session() as s:
            person = s.scalar(select(Subscriber))
            assert person.email == admin.contracts[SAMPLE_CONTRACT]["customer"]["email"].lower()
            assert person.subscriptions[0].plan == "Example T-Shirt"
    assert fired(hub, "Plan Changed") == []
    assert len(fired(hub, "Subscription Started")) == 1


def test_skipping_a_later_shopify_delivery_names_it_and_leaves_the_next_renewal(client, hub):
    nxt = noon_in(20)
    with FakeShopifyAdmin(token="shpat_skip", owns_contracts=True) as admin:
        shopify_skip(client, hub, admin, nxt, cycle=2)
    [skip] = fired(hub, "Renewal Skipped")
    assert (skip["skipped_renewal_at"], skip["next_renewal_at"]) == (
        (nxt + timedelta(weeks=4)).isoformat(), nxt.isoformat())


def test_a_shopify_skip_whose_webhook_was_missed_is_asked_for_before_its_reminder(client, hub):
    """A skip may leave the contract's updatedAt as it was, so the changes reconciliation lists
    never show it: before each renewal reminder, reconciliation asks for the contract's
    billing cycles again, and the skipped delivery gets no reminder."""
    nxt = noon_in(20)
    with FakeShopifyAdmin(token="shpat_skip", owns_contracts=True) as admin:
        shopify_contract(client, hub, admin, nxt)
        admin.skip(SAMPLE_CONTRACT, 1)  # its webhook never comes
        reconcile.run(hub, now=nxt - timedelta(days=17))  # no reminder within two days: nothing asked
        asked = [r for r in admin.requests if "subscriptionBillingCycles(" in r["query"]]
        [shop] = reconcile.run(hub, now=nxt - timedelta(days=15, hours=12)).sources  # the 14-day one is
        again = reconcile.run(hub, now=nxt - timedelta(days=15)).sources[0]  # asked once
    assert len(asked) == 1  # the contract's webhook alone
    assert (shop.checked, shop.stored, shop.recovered, again.checked) == (1, 1, 1, 0)
    with hub.storage.session() as s:
        assert s.scalar(select(Subscriber)).subscriptions[0].next_renewal_at == nxt + timedelta(weeks=4)
    run_time_rules(hub, nxt - timedelta(days=14))
    assert fired(hub, "Renewal Reminder") == []


def test_a_shopify_cycle_edit_taken_back_while_its_webhook_was_missed_is_reminded_at_the_contracts_price(
        client, hub):
    nxt = noon_in(20)
    with FakeShopifyAdmin(token="shpat_skip", owns_contracts=True) as admin:
        shopify_three_shirts(client, hub, admin, nxt)
        admin.edit_lines(SAMPLE_CONTRACT, 1, None)  # taken back; its webhook never comes
        reconcile.run(hub, now=nxt - timedelta(days=10))
        reconcile.run(hub, now=nxt - timedelta(days=8, hours=12))  # two days before the 7-day one
    run_time_rules(hub, nxt - timedelta(days=7))
    assert [(r["days_before"], r["amount"]) for r in fired(hub, "Renewal Reminder")] == [(7, 4998)]


def test_a_shopify_delivery_moved_to_another_day_moves_its_reminders(client, hub):
    nxt = noon_in(20)
    moved = nxt + timedelta(days=3)
    with FakeShopifyAdmin(token="shpat_skip", owns_contracts=True) as admin:
        shopify_contract(client, hub, admin, nxt)
        edit = admin.move(SAMPLE_CONTRACT, 1, moved.strftime("%Y-%m-%dT%H:%M:%SZ"))
        send(client, hub, "shopify", edit, topic="subscription_billing_cycle_edits/create", webhook_id="wh-edit")
    run_time_rules(hub, moved - timedelta(days=7))
    assert [(r["renewal_date"], r["days_before"]) for r in fired(hub, "Renewal Reminder")] == [
        (moved.date().isoformat(), 7)]
    assert fired(hub, "Renewal Skipped") == []


def test_a_shopify_delivery_edited_for_itself_is_reminded_at_its_own_price(client, hub):
    """A customer takes three shirts instead of two for the next delivery alone (a billing cycle
    contract edit): its reminder names what that delivery bills; taken back, the contract's price."""
    nxt = noon_in(20)
    with FakeShopifyAdmin(token="shpat_skip", owns_contracts=True) as admin:
        shopify_three_shirts(client, hub, admin, nxt)
        run_time_rules(hub, nxt - timedelta(days=14))
        send(client, hub, "shopify", admin.edit_lines(SAMPLE_CONTRACT, 1, None),
             topic="subscription_billing_cycle_edits/delete", webhook_id="wh-edit-back")
        run_time_rules(hub, nxt - timedelta(days=7))
    assert [(r["days_before"], r["amount"], r["currency"]) for r in fired(hub, "Renewal Reminder")] == [
        (14, 7497, "CAD"), (7, 4998, "CAD")]


# --- 5. a new card -----------------------------------------------------------------------------

def test_card_update_mid_dunning_fires_payment_method_updated_naming_the_owed_payment(client, hub):
    failed = load_sample("shared:stripe/pay/invoice.payment_failed.json")["object"]
    card = load_sample("shared:stripe/pay/payment_method.updated.json")
    send(client, hub, "stripe", stripe_event("invoice.payment_failed", failed, event_id="evt_f",
                                             created=failed["created"]))
    updated = stripe_event("payment_method.updated", card["object"], event_id="evt_c", created=failed["created"] + 60,
                           previous_attributes=card["previous_attributes"])
    send(client, hub, "stripe", updated)
    send(client, hub, "stripe", {**updated, "id": "evt_c2"})  # the same card again: nothing new
    detached = load_sample("shared:stripe/pay/payment_method.detached.json")
    send(client, hub, "stripe", stripe_event("payment_method.detached", detached["object"], event_id="evt_d",
                                             created=failed["created"] + 120,
                                             previous_attributes=detached.get("previous_attributes")))
    [props] = fired(hub, "Payment Method Updated")
    assert props == {"source": "stripe", "card_id": "pm_1000", "brand": "visa", "last4": "3184", "exp_month": 12,
                     "exp_year": 2035, "auto_updated": False, "updated_at": iso_of(failed["created"] + 60),
                     "dunning_payment_id": "in_1234"}


def test_chargebee_card_update_fires_payment_method_updated(client, hub):
    send(client, hub, "chargebee", load_sample("chargebee/card_updated.json"))
    [props] = fired(hub, "Payment Method Updated")
    assert (props["source"], props["exp_year"], props["dunning_payment_id"]) == ("chargebee", 2029, None)


# --- 4. subscriptions set to end ------------------------------------------------------------------

def sweep_on(hub, *days: int) -> None:
    """`hub sweep` at 06:00 on each of these days after T0."""
    for day in days:
        run_time_rules(hub, datetime.fromtimestamp(T0 + day * DAY, UTC).replace(hour=6))


def test_stripe_cancel_at_period_end_gets_renew_now_aligned_to_the_end_with_a_hub_link(client, hub):
    ending = stripe_subscription(cancel_at_period_end=True, cancel_at=T0 + 31 * DAY,
                                 cancellation_details={"reason": "cancellation_requested", "feedback": None,
                                                       "comment": None})
    with FakeStripe(key="sk_test_renew") as api:  # the key makes Renew Now a hub link; its customer is read there
        hub.settings.STRIPE_API_KEY, hub.settings.STRIPE_API_BASE = "sk_test_renew", api.url
        hub.settings.HUB_BASE_URL = "https://hub.shop.example"
        stripe_send(client, hub, "customer.subscription.created", stripe_subscription(), 1, T0)
        stripe_send(client, hub, "customer.subscription.updated", ending, 2, T0 + DAY,
                    {"cancel_at_period_end": False})
    sweep_on(hub, 16, 17, 24, 29, 30)  # the period ends on day 31: 14, 7 and 1 days before
    renew = fired(hub, "Renew Now")
    assert [(r["days_before"], r["end_date"]) for r in renew] == [(14, "2026-04-01"), (7, "2026-04-01"),
                                                                   (1, "2026-04-01")]
    with hub.storage.session() as s:
        links = {link.token: link.purpose for link in s.scalars(select(CustomerLink))}
    assert [links[r["renew_url"].rsplit("/l/", 1)[1]] for r in renew] == ["renew"] * 3
    assert fired(hub, "Renewal Reminder") == []  # it does not renew: no renewal reminders


def test_a_stripe_cancellation_dated_to_the_period_end_gets_renew_now_as_cancel_at_period_end_does(client, hub):
    """cancel_at=min_period_end (and the like) "resolve to timestamps immediately": the
    subscription says cancel_at, with cancel_at_period_end false
    (https://docs.stripe.com/changelog/basil/2025-07-30/cancel-at-enums)."""
    ending = stripe_subscription(cancel_at_period_end=False, cancel_at=T0 + 31 * DAY)
    stripe_send(client, hub, "customer.subscription.created", stripe_subscription(), 1, T0)
    stripe_send(client, hub, "customer.subscription.updated", ending, 2, T0 + DAY, {"cancel_at": None})
    sweep_on(hub, 17, 24, 30)
    assert [(r["days_before"], r["end_date"]) for r in fired(hub, "Renew Now")] == [
        (14, "2026-04-01"), (7, "2026-04-01"), (1, "2026-04-01")]
    assert fired(hub, "Renewal Reminder") == []


def test_renew_now_stops_when_they_resume(client, hub):
    stripe_send(client, hub, "customer.subscription.created", stripe_subscription(cancel_at_period_end=True), 1, T0)
    sweep_on(hub, 17)
    stripe_send(client, hub, "customer.subscription.updated", stripe_subscription(), 2, T0 + 20 * DAY,
                {"cancel_at_period_end": True})
    sweep_on(hub, 24, 30)
    assert [r["days_before"] for r in fired(hub, "Renew Now")] == [14]
    assert [r["days_before"] for r in fired(hub, "Renewal Reminder")] == [7, 1]


def test_chargebee_non_renewing_gets_renew_now_until_the_scheduled_cancellation_is_removed(client, hub):
    send(client, hub, "chargebee", load_sample("chargebee/subscription_cancellation_scheduled.json"))
    ends = load_sample("chargebee/subscription_cancellation_scheduled.json")["content"]["subscription"]
    end = datetime.fromtimestamp(ends["current_term_end"], UTC)
    run_time_rules(hub, end.replace(hour=6) - timedelta(days=14))
    send(client, hub, "chargebee", load_sample("chargebee/subscription_scheduled_cancellation_removed.json"))
    run_time_rules(hub, end.replace(hour=6) - timedelta(days=7))
    assert [(r["days_before"], r["ends_at"]) for r in fired(hub, "Renew Now")] == [(14, end.isoformat())]


def recharge_charge_paid(charge_id: int, day: str) -> dict:
    paid = copy.deepcopy(load_sample("recharge/charge_paid.json"))
    paid["charge"].update(id=charge_id, scheduled_at=day, processed_at=f"{day}T04:00:12+00:00",
                          updated_at=f"{day}T04:00:12+00:00", external_order_id={"ecommerce": str(charge_id)})
    return paid


def test_recharge_subscription_expiring_after_its_charges_gets_renew_now_before_the_last_until_it_renews(client, hub):
    sub = copy.deepcopy(load_sample("shared:recharge/subscription.json"))
    sub["subscription"].update(order_interval_unit="month", order_interval_frequency=1, charge_interval_frequency=1,
                               expire_after_specific_number_of_charges=3)
    send(client, hub, "recharge", sub, topic="subscription/created")
    send(client, hub, "recharge", recharge_charge_paid(580293300, "2022-03-10"), topic="charge/paid")
    run_time_rules(hub, datetime(2022, 4, 2, 6, tzinfo=UTC))  # before the second of three charges
    send(client, hub, "recharge", recharge_charge_paid(580293301, "2022-04-09"), topic="charge/paid")
    after = copy.deepcopy(sub)
    after["subscription"].update(next_charge_scheduled_at="2022-05-09", updated_at="2022-04-09T05:00:00+00:00")
    send(client, hub, "recharge", after, topic="subscription/updated")
    for day in (25, 2):  # 14 and 7 days before the third and last charge, on May 9
        run_time_rules(hub, datetime(2022, 4 if day == 25 else 5, day, 6, tzinfo=UTC))
    # The customer extends it: no expiry any more, no last reminder.
    renewed = copy.deepcopy(after)
    renewed["subscription"].update(expire_after_specific_number_of_charges=None, updated_at="2022-05-03T09:00:00+00:00")
    send(client, hub, "recharge", renewed, topic="subscription/updated")
    run_time_rules(hub, datetime(2022, 5, 8, 6, tzinfo=UTC))
    assert [(r["days_before"], r["end_date"], r["subscription_id"]) for r in fired(hub, "Renew Now")] == [
        (14, "2022-05-09", "1111111"), (7, "2022-05-09", "1111111")]


def test_the_drain_reads_the_charges_an_expiring_subscription_made_as_a_single_event_does(client, hub):
    # The drain loads its batch's people together; a Renew Now it decides must see the same
    # count of paid charges as the one-event path and the sweep.
    sub = copy.deepcopy(load_sample("shared:recharge/subscription.json"))
    sub["subscription"].update(expire_after_specific_number_of_charges=2)
    send(client, hub, "recharge", sub, topic="subscription/created")
    send(client, hub, "recharge", recharge_charge_paid(580293300, "2022-03-10"), topic="charge/paid")
    with hub.storage.session() as s:
        person = s.scalar(select(Subscriber))
        [together] = queries.subscriber_states(s, [person.id])
        alone = queries.subscriber_state(person)
    assert [(x.charges_limit, x.charges_made) for x in together.subscriptions] == [(2, 1)]
    # Products aside: the batch leaves them out, as no subscriber-level rule reads them.
    assert [replace(x, product_ids=()) for x in together.subscriptions] == [
        replace(x, product_ids=()) for x in alone.subscriptions]


def test_recharge_swap_fires_plan_changed_without_a_proration(client, hub):
    sub = copy.deepcopy(load_sample("shared:recharge/subscription.json"))
    sub["subscription"]["presentment_currency"] = "USD"
    send(client, hub, "recharge", sub, topic="subscription/created")
    swapped = copy.deepcopy(sub)
    swapped["subscription"].update(external_variant_id={"ecommerce": "999"}, variant_title="2 kg", price="79.00",
                                   updated_at="2022-03-20T09:00:00+00:00")
    send(client, hub, "recharge", swapped, topic="subscription/swapped")
    [props] = fired(hub, "Plan Changed")
    old, new = sub["subscription"], swapped["subscription"]
    assert (props["previous_plan"], props["plan"], props["direction"], props["proration_amount"]) == (
        f"{old['product_title']} - {old['variant_title']}", f"{new['product_title']} - 2 kg", "upgrade", None)
    assert (props["previous_amount"], props["amount"]) == (4900 * old["quantity"], 7900 * old["quantity"])


# --- 6. a subscription awaiting its first payment ------------------------------------------------
# Stripe creates a subscription `incomplete` until its first invoice is paid, every new one when
# the shop creates them with payment_behavior=default_incomplete, and ends one never paid within
# 23 hours as `incomplete_expired` (https://docs.stripe.com/api/subscriptions/object#subscription_object-status,
# https://docs.stripe.com/billing/subscriptions/overview#subscription-statuses).

def test_a_stripe_subscription_is_welcomed_when_its_first_payment_is_made_not_before(client, hub):
    stripe_send(client, hub, "customer.subscription.created", stripe_subscription(status="incomplete"), 1, T0)
    assert fired(hub, "Subscription Started") == [] and fired(hub, "Welcome Step") == []
    paid = T0 + 90
    stripe_send(client, hub, "customer.subscription.updated", stripe_subscription(), 2, paid, {"status": "incomplete"})
    [started] = fired(hub, "Subscription Started")
    [step] = fired(hub, "Welcome Step")
    assert (started["subscription_id"], started["started_at"], step["step"], step["started_at"]) == (
        "sub_m1", iso_of(paid), 1, iso_of(paid))


def test_a_stripe_subscription_never_paid_ends_with_no_cancellation_no_win_back_and_no_churn(client, hub):
    stripe_send(client, hub, "customer.subscription.created", stripe_subscription(status="incomplete"), 1, T0)
    expired = stripe_subscription(status="incomplete_expired", canceled_at=T0 + DAY, ended_at=T0 + DAY)
    stripe_send(client, hub, "customer.subscription.updated", expired, 2, T0 + DAY, {"status": "incomplete"})
    sweep_on(hub, 2, 31, 32)
    assert [fired(hub, name) for name in ("Subscription Started", "Subscription Cancelled", "Win Back")] == [[], [], []]
    with hub.storage.session() as s:
        person = s.scalar(select(Subscriber))
        assert [(x.status, x.started_at) for x in person.subscriptions] == [("expired", None)]
        assert person.stage != "churned"


# --- 7. Recharge's charge dates ------------------------------------------------------------------

def test_a_recharge_charge_date_is_reminded_of_as_that_day_in_a_shop_west_of_utc(client, hub, tmp_path):
    """Recharge names a charge by its day (`2022-04-09`) and charges it from midnight Eastern
    Time; read as midnight UTC it would be April 8 in New York, and every reminder a day early."""
    mappings = tmp_path / "mappings"
    shutil.copytree(PROJECT / "mappings", mappings)
    rules_file = mappings / "rules.yaml"
    rules_file.write_text(rules_file.read_text().replace("timezone: UTC ", "timezone: America/New_York "))
    hub.settings.HUB_MAPPINGS_DIR = str(mappings)
    sub = copy.deepcopy(load_sample("shared:recharge/subscription.json"))
    sub["subscription"].update(order_interval_unit="month", order_interval_frequency=1, charge_interval_frequency=1)
    send(client, hub, "recharge", sub, topic="subscription/created")  # next charge 2022-04-09
    run_time_rules(hub, datetime(2022, 4, 2, 10, tzinfo=UTC))  # 06:00 in New York, 7 days before
    assert [(r["renewal_date"], r["days_before"]) for r in fired(hub, "Renewal Reminder")] == [("2022-04-09", 7)]
