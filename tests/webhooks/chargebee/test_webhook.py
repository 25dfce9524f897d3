"""Chargebee webhooks: basic auth, envelope, and every sample normalized (design §4)."""
from __future__ import annotations

import base64
import copy
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from werkzeug.datastructures import Headers

from hub import events as ev
from hub.config import Settings
from hub.errors import MalformedPayload, RetryLater, SignatureInvalid
from standins.chargebee import FakeChargebee
from tests.samples import OURS, chargebee_auth, load_sample
from webhooks import body_hash_id, get_source
from webhooks.chargebee import billing
from webhooks.chargebee import webhook as chargebee

SUB_ID = "16BjnUSUXm71P3Xq"
CUSTOMER_ID = "16BjnUSUXm6zM2Xk"


def at(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def settings(user="cb-hooks", password="s3cret:with-colon") -> Settings:
    return Settings.from_env(env={}, overrides={"CHARGEBEE_WEBHOOK_USER": user,
                                                "CHARGEBEE_WEBHOOK_PASSWORD": password})


def normalize(name: str, payload: dict | None = None):
    """The canonical events of a sample (optionally a changed copy of it)."""
    payload = payload if payload is not None else load_sample(f"chargebee/{name}.json")
    body = json.dumps(payload).encode()
    envelope = chargebee.describe({}, body)
    return chargebee.TOPICS[envelope.topic](payload, envelope)


def only(name: str, payload: dict | None = None):
    events = normalize(name, payload)
    assert len(events) == 1
    return events[0]


# --- verify -------------------------------------------------------------------------------

def test_module_is_the_chargebee_source():
    assert get_source("chargebee").topics is chargebee.TOPICS and chargebee.NAME == "chargebee"


def test_verify_accepts_the_configured_pair_in_a_dict_or_werkzeug_headers():
    headers = chargebee_auth("cb-hooks", "s3cret:with-colon")
    chargebee.verify(settings(), headers, b"{}")
    chargebee.verify(settings(), Headers(headers), b"{}")
    chargebee.verify(settings(), {"authorization": headers["Authorization"]}, b"{}")


@pytest.mark.parametrize("headers", [
    chargebee_auth("cb-hooks", "wrong"),
    chargebee_auth("someone", "s3cret:with-colon"),
    chargebee_auth("cb-hooks", "s3cret"),
    {"Authorization": "Bearer abc"},
    {"Authorization": "Basic !!!not-base64"},
    {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
    {"Authorization": "Basic "},
    {"Content-Type": "application/json"},
    {},
])
def test_verify_refuses_missing_or_wrong_credentials(headers):
    with pytest.raises(SignatureInvalid):
        chargebee.verify(settings(), headers, b"{}")


@pytest.mark.parametrize("user,password", [("", ""), ("cb-hooks", ""), ("", "pw")])
def test_verify_refuses_everything_when_credentials_are_not_configured(user, password):
    with pytest.raises(SignatureInvalid, match="not configured"):
        chargebee.verify(settings(user, password), chargebee_auth(user, password), b"{}")


# --- describe -----------------------------------------------------------------------------

def test_describe_reads_the_event_envelope():
    body = (OURS / "chargebee" / "payment_failed.json").read_bytes()
    env = chargebee.describe({}, body)
    assert env.event_id == "ev_16BjnUSUXmT8d1ZQ"
    assert env.topic == "payment_failed"
    assert env.api_version == "v2"
    assert env.triggered_at == at(2026, 12, 18, 15)
    assert env.extra == {"source": "scheduled_job"}


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'{"event_type": "customer_created"}',
                                  b"\xff\xfe", b'{"id": "ev_1", "occurred_at": "soon"}'])
def test_describe_never_raises(body):
    env = chargebee.describe({}, body)
    if b"ev_1" in body:  # an id is enough to dedupe; a bad time is only left out
        assert (env.event_id, env.topic, env.triggered_at) == ("ev_1", "unreadable", None)
    else:
        assert (env.event_id, env.topic) == (body_hash_id(body), "unreadable")


def test_every_sample_is_a_known_topic_and_every_topic_has_a_sample():
    samples = sorted(Path(OURS / "chargebee").glob("*.json"))
    topics = {json.loads(p.read_text())["event_type"] for p in samples}
    assert topics == set(chargebee.TOPICS)
    for path in samples:
        assert normalize(path.stem), path.name


# --- customers ----------------------------------------------------------------------------

def test_customer_created():
    e = only("customer_created")
    assert e.name == "customer.upserted" and e.source == "chargebee"
    assert e.customer == {"source_id": CUSTOMER_ID, "email": "maria.lopez@example.com",
                          "phone": "+14155550132", "first_name": "Maria", "last_name": "Lopez",
                          "created_at": at(2026, 10, 1, 15)}
    # resource_version (ms) orders changes made within the same second
    assert e.occurred_at == at(2026, 10, 1, 15, 0, 0, 417000)


def test_customer_changed_carries_new_email_and_phone():
    e = only("customer_changed")
    assert e.name == "customer.upserted"
    assert e.customer["email"] == "maria.lopez@newmail.example"
    assert e.customer["phone"] == "+442079460958"
    assert e.occurred_at == at(2026, 10, 4, 16, 0, 0, 417000)


def test_customer_changed_without_resource_version_uses_updated_at_then_occurred_at():
    payload = load_sample("chargebee/customer_changed.json")
    del payload["content"]["customer"]["resource_version"]
    assert only("customer_changed", payload).occurred_at == at(2026, 10, 4, 16)
    del payload["content"]["customer"]["updated_at"]
    payload["occurred_at"] = 1790960000
    assert only("customer_changed", payload).occurred_at == datetime.fromtimestamp(1790960000, timezone.utc)


def test_customer_deleted():
    e = only("customer_deleted")
    assert e.name == "customer.deleted"
    assert e.customer["source_id"] == CUSTOMER_ID and e.data == {}


# --- subscriptions ------------------------------------------------------------------------

def test_subscription_created_pc2_in_trial():
    e = only("subscription_created")
    assert e.name == "subscription.upserted"
    assert e.customer["email"] == "maria.lopez@example.com"
    assert e.data == {
        "source_id": SUB_ID, "status": "trialing",
        "plan": "Coffee-Club-USD-Monthly", "plan_id": "Coffee-Club-USD-Monthly",
        "interval": "month", "interval_count": 1, "quantity": 1,
        # plan 2900 + 2 bags × 900; the one-time Welcome-Kit charge item is not recurring
        "amount": 4700, "currency": "USD",
        "current_period_start": at(2026, 10, 1, 15), "current_period_end": at(2026, 10, 15, 15),
        "next_renewal_at": at(2026, 10, 15, 15), "resumes_at": None, "trial_end": at(2026, 10, 15, 15),
        "cancel_at_period_end": False, "canceled_at": None,
    }


def test_pc1_and_pc2_shapes_give_the_same_subscription():
    pc2, pc1 = only("subscription_created").data, only("subscription_created_pc1").data
    assert pc1["amount"] == pc2["amount"] == 4700
    assert pc1["plan_id"] == "coffee-club-monthly"
    assert {k: v for k, v in pc1.items() if k not in ("plan", "plan_id")} == \
           {k: v for k, v in pc2.items() if k not in ("plan", "plan_id")}


def test_amount_is_unit_price_times_quantity_when_amount_is_absent():
    payload = load_sample("chargebee/subscription_created_pc1.json")
    sub = payload["content"]["subscription"]
    del sub["plan_amount"], sub["addons"][0]["amount"]
    sub["currency_code"] = "usd"
    data = only("subscription_created", payload).data
    assert (data["amount"], data["currency"]) == (4700, "USD")


def test_subscription_without_currency_leaves_money_out():
    payload = load_sample("chargebee/subscription_renewed.json")
    del payload["content"]["subscription"]["currency_code"]
    data = only("subscription_renewed", payload).data
    assert "amount" not in data and "currency" not in data


@pytest.mark.parametrize("sample,status,next_renewal", [
    ("subscription_activated", "active", at(2026, 11, 15, 15)),
    ("subscription_started", "active", at(2026, 12, 15, 15)),
    ("subscription_renewed", "active", at(2026, 12, 15, 15)),
    ("subscription_resumed", "active", at(2027, 1, 17, 15)),
    ("subscription_reactivated", "active", at(2027, 2, 3, 15)),
    ("subscription_scheduled_cancellation_removed", "active", at(2026, 12, 15, 15)),
    ("subscription_paused", "paused", at(2027, 1, 17, 15)),  # resumes after its term: renews then
])
def test_subscription_upserted_statuses(sample, status, next_renewal):
    e = only(sample)
    assert e.name == "subscription.upserted"
    assert e.customer["source_id"] == CUSTOMER_ID
    assert (e.data["source_id"], e.data["status"], e.data["next_renewal_at"]) == (SUB_ID, status, next_renewal)
    assert (e.data["amount"], e.data["currency"]) == (4700, "USD")
    assert e.data["cancel_at_period_end"] is False


def test_subscription_renewed_pc1():
    e = only("subscription_renewed")
    assert e.data["plan_id"] == "coffee-club-monthly"
    assert e.data["current_period_start"] == at(2026, 11, 15, 15)
    assert e.data["current_period_end"] == at(2026, 12, 15, 15)
    assert e.occurred_at == at(2026, 11, 15, 15, 0, 0, 417000)


def test_subscription_changed_to_a_quarterly_price():
    d = only("subscription_changed").data
    assert (d["plan_id"], d["interval"], d["interval_count"]) == ("Coffee-Club-USD-Every-3-months", "month", 3)
    assert (d["amount"], d["currency"]) == (7900 + 2 * 2400, "USD")
    assert d["next_renewal_at"] == at(2027, 1, 20, 15)


def test_cancellation_scheduled_is_active_until_the_period_ends():
    d = only("subscription_cancellation_scheduled").data
    assert d["status"] == "active" and d["cancel_at_period_end"] is True
    assert d["next_renewal_at"] is None and d["canceled_at"] is None
    assert d["current_period_end"] == at(2026, 12, 15, 15)


def test_non_renewing_never_has_a_next_renewal_even_if_sent():
    payload = load_sample("chargebee/subscription_cancellation_scheduled.json")
    payload["content"]["subscription"]["next_billing_at"] = 1797346800
    assert only("subscription_cancellation_scheduled", payload).data["next_renewal_at"] is None


def test_subscription_cancelled():
    e = only("subscription_cancelled")
    assert e.name == "subscription.canceled"
    assert e.data["status"] == "canceled"  # due invoices do not make a cancelled one past_due
    assert e.data["canceled_at"] == at(2026, 12, 30, 15)
    assert e.data["next_renewal_at"] is None


def test_active_with_due_invoices_is_past_due():
    payload = load_sample("chargebee/subscription_renewed.json")
    payload["content"]["subscription"]["due_invoices_count"] = 1
    assert only("subscription_renewed", payload).data["status"] == "past_due"


@pytest.mark.parametrize("raw,canonical", [("future", "trialing"), ("in_trial", "trialing"),
                                           ("active", "active"), ("non_renewing", "active"),
                                           ("paused", "paused"), ("cancelled", "canceled"),
                                           ("transferred", "canceled")])
def test_status_map(raw, canonical):
    payload = load_sample("chargebee/subscription_changed.json")
    payload["content"]["subscription"]["status"] = raw
    assert only("subscription_changed", payload).data["status"] == canonical


def test_unknown_status_or_missing_subscription_is_malformed():
    payload = load_sample("chargebee/subscription_changed.json")
    payload["content"]["subscription"]["status"] = "archived"
    with pytest.raises(MalformedPayload):
        normalize("subscription_changed", payload)
    del payload["content"]["subscription"]
    with pytest.raises(MalformedPayload):
        normalize("subscription_changed", payload)


def test_subscription_event_without_customer_object_keeps_the_customer_id():
    payload = load_sample("chargebee/subscription_changed.json")
    del payload["content"]["customer"]
    assert only("subscription_changed", payload).customer == {"source_id": CUSTOMER_ID}


def test_trial_end_reminder():
    e = only("subscription_trial_end_reminder")
    assert e.name == "trial.ending"
    assert e.data["status"] == "trialing"
    assert e.data["trial_end"] == at(2026, 10, 15, 15)
    assert e.occurred_at == at(2026, 10, 12, 15)  # the reminder's own time, not the subscription's


def test_renewal_reminder():
    e = only("subscription_renewal_reminder")
    assert e.name == "renewal.upcoming"
    assert e.data == {"subscription_source_id": SUB_ID, "renewal_at": at(2026, 12, 15, 15),
                      "amount": 4700, "currency": "USD"}
    assert e.occurred_at == at(2026, 12, 12, 15)


# --- payments -----------------------------------------------------------------------------

def test_payment_succeeded():
    e = only("payment_succeeded")
    assert e.name == "payment.succeeded"
    assert e.customer["email"] == "maria.lopez@example.com"
    assert e.data == {"source_id": "1042", "subscription_source_id": SUB_ID, "status": "succeeded",
                      "amount": 4700, "currency": "USD", "due_at": at(2026, 11, 15, 15),
                      "paid_at": at(2026, 11, 15, 15), "update_payment_url": None}
    assert e.occurred_at == at(2026, 11, 15, 15, 0, 0, 655000)  # the transaction's version


def test_payment_failed_soft_decline():
    e = only("payment_failed")
    assert e.name == "payment.failed"
    assert e.data == {"source_id": "1057", "subscription_source_id": SUB_ID, "status": "failed",
                      "amount": 4700, "currency": "USD", "attempt_count": 2,
                      "next_retry_at": at(2026, 12, 23, 15), "due_at": at(2026, 12, 15, 15),
                      "failure_reason": "Your card has insufficient funds.",
                      "decline_code": "insufficient_funds", "hard_decline": False,
                      "update_payment_url": None}


@pytest.mark.parametrize("error_code,decline_code", [("expired_card", None), ("card_declined", "stolen_card")])
def test_payment_failed_hard_decline(error_code, decline_code):
    payload = load_sample("chargebee/payment_failed.json")
    txn = payload["content"]["transaction"]
    txn["error_code"] = error_code
    if decline_code:
        txn["error_detail"]["decline_code"] = decline_code
    else:
        del txn["error_detail"]
    data = only("payment_failed", payload).data
    assert data["hard_decline"] is True
    assert data["decline_code"] == (decline_code or error_code)


@pytest.mark.parametrize("gateway, error_code, error_text, hard", [
    ("braintree", "2013", "Possible Stolen Card", True),
    ("braintree", "2004", "Expired Card", True),
    ("braintree", "2001", "Insufficient Funds", False),
    ("braintree", "2000", "Do Not Honor", False),
])
def test_payment_failed_with_a_gateways_own_error_code(gateway, error_code, error_text, hard):
    payload = load_sample("chargebee/payment_failed.json")
    txn = payload["content"]["transaction"]
    txn.update(gateway=gateway, error_code=error_code, error_text=error_text)
    del txn["error_detail"]
    data = only("payment_failed", payload).data
    assert (data["decline_code"], data["hard_decline"], data["failure_reason"]) == (error_code, hard, error_text)


def test_payment_failed_after_the_last_dunning_attempt_has_exhausted_its_retries():
    payload = load_sample("chargebee/payment_failed.json")
    payload["content"]["invoice"].update(dunning_status="exhausted", status="not_paid")
    del payload["content"]["invoice"]["next_retry_at"]
    data = only("payment_failed", payload).data
    assert (data["status"], data["next_retry_at"]) == ("retries_exhausted", None)


def test_payment_failed_with_invoice_only():
    payload = load_sample("chargebee/payment_failed.json")
    del payload["content"]["transaction"]
    payload["content"]["invoice"]["dunning_attempts"] = []
    e = only("payment_failed", payload)
    assert (e.data["source_id"], e.data["amount"], e.data["currency"]) == ("1057", 4700, "USD")
    assert "attempt_count" not in e.data
    assert e.occurred_at == at(2026, 12, 18, 15, 0, 0, 902000)  # the invoice's version


def test_payment_without_invoice_or_transaction_is_malformed():
    payload = load_sample("chargebee/payment_succeeded.json")
    del payload["content"]["invoice"], payload["content"]["transaction"]
    with pytest.raises(MalformedPayload):
        normalize("payment_succeeded", payload)


# --- cards --------------------------------------------------------------------------------

def test_card_expiry_reminder():
    e = only("card_expiry_reminder")
    assert e.name == "payment_method.expiring"
    assert e.data == {"source_id": "pm_16BjnUSUXm7Vw2Xo", "brand": "visa", "last4": "4242",
                      "exp_month": 12, "exp_year": 2026}
    assert e.occurred_at == at(2026, 11, 20, 15)


@pytest.mark.parametrize("sample,expected", [
    ("card_updated", {"source_id": "pm_16BjnUSUXm7Vw2Xo", "brand": "visa", "last4": "4242",
                      "exp_month": 12, "exp_year": 2029}),
    ("card_added", {"source_id": "pm_AzZlGJUXn2kQ81Ab", "brand": "mastercard", "last4": "1881",
                    "exp_month": 3, "exp_year": 2030}),
])
def test_card_updated_and_added(sample, expected):
    e = only(sample)
    assert e.name == "payment_method.updated"
    assert e.data == expected
    assert e.customer["source_id"] == CUSTOMER_ID


def test_card_without_payment_source_id_falls_back_to_the_customer():
    payload = load_sample("chargebee/card_updated.json")
    del payload["content"]["card"]["payment_source_id"]
    assert only("card_updated", payload).data["source_id"] == CUSTOMER_ID


def test_events_serialize_for_the_timeline():
    for path in sorted(Path(OURS / "chargebee").glob("*.json")):
        for e in normalize(path.stem):
            assert json.loads(json.dumps(e.to_dict()))["source"] == "chargebee"


# --- the events Stripe's equivalents cover ------------------------------------------------

def test_payment_refunded_is_the_refund_stripe_charge_refunded_gives():
    e = only("payment_refunded")
    assert e.name == "order.refunded"
    assert e.data == {"source_id": "txn_AzZlGJUXnR3f1Ab7", "order_source_id": "1042",
                      "amount": 1500, "currency": "USD"}
    assert e.customer["source_id"] == CUSTOMER_ID


def test_subscription_deleted_is_canceled():
    e = only("subscription_deleted")
    assert e.name == "subscription.canceled" and e.data["source_id"] == SUB_ID
    assert e.data["status"] == "canceled" and e.data["next_renewal_at"] is None


def test_paused_subscription_resumes_on_its_resume_date_and_resumed_clears_it():
    paused = only("subscription_paused").data
    assert (paused["status"], paused["resumes_at"]) == ("paused", at(2027, 1, 17, 15))
    resumed = only("subscription_resumed").data
    assert resumed["status"] == "active" and resumed["resumes_at"] is None


def test_trial_extended_moves_the_trial_end():
    before, after = only("subscription_created").data, only("subscription_trial_extended")
    assert after.name == "subscription.upserted" and after.data["status"] == "trialing"
    assert after.data["trial_end"] - before["trial_end"] == timedelta(days=14)


@pytest.mark.parametrize("sample,name,card", [
    ("payment_source_added", "payment_method.updated",
     {"source_id": "pm_AzZlGJUXn2kQ81Ab", "brand": "mastercard", "last4": "1881", "exp_month": 3, "exp_year": 2030}),
    ("payment_source_updated", "payment_method.updated",
     {"source_id": "pm_AzZlGJUXn2kQ81Ab", "brand": "mastercard", "last4": "1881", "exp_month": 3, "exp_year": 2031}),
    ("payment_source_expiring", "payment_method.expiring",
     {"source_id": "pm_16BjnUSUXm7Vw2Xo", "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2026}),
    ("payment_source_expired", "payment_method.expiring",
     {"source_id": "pm_16BjnUSUXm7Vw2Xo", "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2026}),
    ("card_expired", "payment_method.expiring",
     {"source_id": "pm_16BjnUSUXm7Vw2Xo", "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2026}),
    # Removed: no expiry left to warn about, as Stripe's payment_method.detached gives.
    ("payment_source_deleted", "payment_method.updated",
     {"source_id": "pm_16BjnUSUXm7Vw2Xo", "brand": "visa", "last4": "4242", "exp_month": None, "exp_year": None}),
    ("card_deleted", "payment_method.updated",
     {"source_id": "pm_16BjnUSUXm7Vw2Xo", "brand": "visa", "last4": "4242", "exp_month": None, "exp_year": None}),
])
def test_payment_source_and_card_events_are_the_card_events_stripe_gives(sample, name, card):
    e = only(sample)
    assert (e.name, e.data) == (name, card)
    assert e.customer["source_id"] == CUSTOMER_ID


def test_customer_names_its_default_card_as_stripe_customers_do():
    assert only("customer_changed").data == {"default_card": "pm_16BjnUSUXm7Vw2Xo"}
    payload = load_sample("chargebee/customer_changed.json")
    del payload["content"]["customer"]["primary_payment_source_id"]  # Chargebee leaves nulls out
    assert only("customer_changed", payload).data == {"default_card": None}


def test_dunning_updated_moves_the_next_retry():
    e = only("dunning_updated")
    assert e.name == "payment.failed"
    assert (e.data["source_id"], e.data["status"], e.data["attempt_count"]) == ("1057", "failed", 2)
    assert e.data["next_retry_at"] == datetime.fromtimestamp(1798210800, timezone.utc)


@pytest.mark.parametrize("dunning_status,name,status", [
    ("exhausted", "payment.failed", "retries_exhausted"),
    ("stopped", "payment.closed", "uncollectible"),
])
def test_dunning_updated_that_ends_dunning(dunning_status, name, status):
    payload = load_sample("chargebee/dunning_updated.json")
    payload["content"]["invoice"]["dunning_status"] = dunning_status
    del payload["content"]["invoice"]["next_retry_at"]
    e = only("dunning_updated", payload)
    assert (e.name, e.data["status"], e.data.get("next_retry_at")) == (name, status, None)


def test_dunning_stopped_on_a_voided_invoice_is_void():
    payload = load_sample("chargebee/dunning_updated.json")
    payload["content"]["invoice"].update(status="voided", dunning_status="stopped")
    e = only("dunning_updated", payload)
    assert (e.name, e.data["status"]) == ("payment.closed", "void")


def test_dunning_updated_of_a_paid_invoice_gives_nothing():
    payload = load_sample("chargebee/dunning_updated.json")
    payload["content"]["invoice"].update(status="paid", dunning_status="success")
    assert normalize("dunning_updated", payload) == []


def test_backdated_change_is_a_subscription_change_ordered_by_resource_version():
    e = only("subscription_changed_with_backdating")
    assert e.name == "subscription.upserted" and e.data["source_id"] == SUB_ID
    sub = load_sample("chargebee/subscription_changed_with_backdating.json")["content"]["subscription"]
    rv = sub["resource_version"]
    assert e.occurred_at == datetime.fromtimestamp(rv / 1000, timezone.utc)


@pytest.mark.parametrize("topic, status, renews", [
    # Paused at the term's end (2026-12-15) until 2027-02-14: the renewal after the pause.
    ("subscription_pause_scheduled", "active", "2027-02-14T15:00:00+00:00"),
    ("subscription_scheduled_pause_removed", "active", "2026-12-15T15:00:00+00:00"),
    ("subscription_resumption_scheduled", "paused", "2027-01-29T15:00:00+00:00"),
    ("subscription_scheduled_resumption_removed", "paused", None),  # paused until resumed by hand
])
def test_a_planned_pause_or_resumption_moves_the_next_renewal(topic, status, renews):
    [event] = normalize(topic, load_sample(f"chargebee/{topic}.json"))
    assert event.name == ev.SUBSCRIPTION_UPSERTED
    assert event.data["status"] == status
    assert event.data.get("next_renewal_at") == (datetime.fromisoformat(renews) if renews else None)


def scheduled_bigger_bag() -> dict:
    """The subscription of the samples as its change scheduled for the term's end makes it:
    three extra bags instead of two (retrieve_with_scheduled_changes)."""
    sub = copy.deepcopy(load_sample("chargebee/subscription_changes_scheduled.json")["content"]["subscription"])
    sub.update(addons=[{"id": "extra-bag", "quantity": 3, "unit_price": 900, "amount": 2700, "object": "addon"}],
               changes_scheduled_at=sub["current_term_end"], has_scheduled_changes=False)
    return sub


def test_a_change_scheduled_for_the_terms_end_tells_what_the_renewal_will_charge():
    payload = {**load_sample("chargebee/subscription_changes_scheduled.json"), "_scheduled": scheduled_bigger_bag()}
    subscription, renewal = normalize("subscription_changes_scheduled", payload)
    assert (subscription.name, subscription.data["amount"]) == (ev.SUBSCRIPTION_UPSERTED, 4700)  # as it is
    assert renewal.name == ev.RENEWAL_UPCOMING
    assert (renewal.data["amount"], renewal.data["renewal_at"]) == (5600, subscription.data["next_renewal_at"])


def test_scheduled_changes_the_hub_could_not_read_leave_the_price_standing():
    [subscription] = normalize("subscription_changes_scheduled")
    assert subscription.name == ev.SUBSCRIPTION_UPSERTED


def test_scheduled_changes_removed_bring_back_the_current_price_for_the_renewal():
    subscription, renewal = normalize("subscription_scheduled_changes_removed")
    assert renewal.data["amount"] == subscription.data["amount"] == 4700


def test_the_scheduled_subscription_is_fetched_from_chargebee_when_changes_are_scheduled():
    payload = load_sample("chargebee/subscription_changes_scheduled.json")
    current = payload["content"]["subscription"]
    with FakeChargebee(api_key="cb_key") as cb:
        cb.subscriptions.append({"subscription": current, "customer": payload["content"]["customer"]})
        cb.scheduled[current["id"]] = scheduled_bigger_bag()
        on = Settings.from_env(env={}, overrides={"CHARGEBEE_API_KEY": "cb_key", "CHARGEBEE_API_BASE": cb.url})
        enriched = billing.ENRICH["subscription_changes_scheduled"](payload, on)
        unchanged = billing.ENRICH["subscription_changes_scheduled"](
            load_sample("chargebee/subscription_scheduled_changes_removed.json"), on)
    assert enriched["_scheduled"]["addons"][0]["quantity"] == 3
    assert "_scheduled" not in unchanged  # nothing scheduled: nothing asked


@pytest.mark.parametrize("status, waits", [(503, True), (429, True), (404, False), (401, False)])
def test_a_scheduled_change_chargebee_does_not_answer_waits_and_one_it_refuses_applies_as_it_is(status, waits):
    payload = load_sample("chargebee/subscription_changes_scheduled.json")
    with FakeChargebee(api_key="cb_key") as cb:
        cb.fail(status, path="/retrieve_with_scheduled_changes")
        on = Settings.from_env(env={}, overrides={"CHARGEBEE_API_KEY": "cb_key", "CHARGEBEE_API_BASE": cb.url})
        if waits:
            with pytest.raises(RetryLater, match=f"Chargebee did not answer: subscriptions/.*: HTTP {status}"):
                billing.ENRICH["subscription_changes_scheduled"](payload, on)
        else:
            assert billing.ENRICH["subscription_changes_scheduled"](payload, on) == payload


def test_a_scheduled_change_answered_with_a_page_that_is_not_json_waits():
    payload = load_sample("chargebee/subscription_changes_scheduled.json")
    with FakeChargebee(api_key="cb_key") as cb:
        cb.fail(200, path="/retrieve_with_scheduled_changes", body=b"<html>Down for maintenance</html>")
        on = Settings.from_env(env={}, overrides={"CHARGEBEE_API_KEY": "cb_key", "CHARGEBEE_API_BASE": cb.url})
        with pytest.raises(RetryLater, match="HTTP 200 with a body that is not a JSON object"):
            billing.ENRICH["subscription_changes_scheduled"](payload, on)
