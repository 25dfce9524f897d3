"""Stripe webhooks: what the hub accepts, and what each Stripe event means in canonical events."""
from __future__ import annotations

import copy
import json
import time
from datetime import datetime, timezone

import pytest
import requests
import responses
from werkzeug.datastructures import Headers

from hub import events as ev
from hub.config import Settings
from hub.errors import RetryLater, SignatureInvalid
from standins.stripe import FakeStripe
from tests.samples import SHARED, load_sample, sign_stripe, stripe_event, stripe_resource, stripe_schedule
from webhooks import body_hash_id
from webhooks.stripe import webhook as hook
from webhooks.stripe.backfill import LISTED_TYPES, STREAMS, invoice_item

SECRET = "whsec_test_secret"
EVENT_CREATED = 1767225600  # 2026-01-01T00:00:00Z


def at(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)


def receive(event: dict) -> list[ev.CanonicalEvent]:
    """What the hub makes of a delivered event: envelope from the body, then its normalizer."""
    body = json.dumps(event).encode()
    envelope = hook.describe({}, body)
    return hook.TOPICS[envelope.topic](json.loads(body), envelope)


def pay_event(file_name: str, event_type: str | None = None) -> dict:
    """A payload collected by the `pay` gem (shared/fixtures/stripe/pay), wrapped as its event."""
    sample = load_sample(f"shared:stripe/pay/{file_name}.json")
    if event_type is None:
        event_type = f"customer.{file_name}" if file_name.startswith("subscription.") else file_name
    # invoice.json is a bare invoice; the others hold the event's `data`.
    obj = sample["object"] if isinstance(sample.get("object"), dict) else sample
    return stripe_event(event_type, obj, created=EVENT_CREATED,
                        previous_attributes=sample.get("previous_attributes"))


def event_object(event: dict) -> dict:
    return event["data"]["object"]


def published_event(resource: str, event_type: str) -> dict:
    """One of Stripe's published example objects, wrapped as an event."""
    return stripe_event(event_type, stripe_resource(resource), created=EVENT_CREATED)


# --- verify ------------------------------------------------------------------------------

BODY = json.dumps(stripe_event("customer.created", {"id": "cus_1"})).encode()


def settings(**overrides) -> Settings:
    return Settings(**{"STRIPE_WEBHOOK_SECRET": SECRET, **overrides})


def test_a_correctly_signed_body_passes():
    hook.verify(settings(), sign_stripe(BODY, SECRET), BODY)


@pytest.mark.parametrize("make_headers",
                         [dict, Headers, lambda h: {k.lower(): v for k, v in h.items()}],
                         ids=["dict", "werkzeug", "lower-case"])
def test_the_signature_header_is_found_whatever_its_case(make_headers):
    hook.verify(settings(), make_headers(sign_stripe(BODY, SECRET)), BODY)


def test_a_body_signed_with_another_secret_is_refused():
    with pytest.raises(SignatureInvalid, match="signature"):
        hook.verify(settings(), sign_stripe(BODY, "whsec_other"), BODY)


def test_a_changed_body_is_refused():
    headers = sign_stripe(BODY, SECRET)
    with pytest.raises(SignatureInvalid):
        hook.verify(settings(), headers, BODY.replace(b"cus_1", b"cus_2"))


def test_a_signature_older_than_five_minutes_is_refused_as_a_replay():
    old = sign_stripe(BODY, SECRET, timestamp=int(time.time()) - 301)
    with pytest.raises(SignatureInvalid, match="tolerance"):
        hook.verify(settings(), old, BODY)


def test_a_missing_signature_header_is_refused():
    with pytest.raises(SignatureInvalid, match="missing"):
        hook.verify(settings(), {"Content-Type": "application/json"}, BODY)


def test_nothing_passes_while_the_webhook_secret_is_unset():
    with pytest.raises(SignatureInvalid, match="STRIPE_WEBHOOK_SECRET"):
        hook.verify(settings(STRIPE_WEBHOOK_SECRET=""), sign_stripe(BODY, SECRET), BODY)


def test_during_secret_rotation_either_v1_signature_passes():
    now = int(time.time())
    old = sign_stripe(BODY, "whsec_old", timestamp=now)["Stripe-Signature"]
    new = sign_stripe(BODY, SECRET, timestamp=now)["Stripe-Signature"]
    both = old + ",v1=" + new.split("v1=")[1]
    hook.verify(settings(), {"Stripe-Signature": both}, BODY)


def test_the_refusal_reason_does_not_quote_the_body():
    with pytest.raises(SignatureInvalid) as refused:
        hook.verify(settings(), sign_stripe(BODY, "whsec_other"), BODY)
    assert "cus_1" not in str(refused.value)


# --- describe ----------------------------------------------------------------------------

def test_the_envelope_is_the_events_id_type_and_creation_time():
    body = json.dumps(stripe_event("invoice.paid", {"id": "in_1"}, event_id="evt_42",
                                   created=EVENT_CREATED)).encode()
    envelope = hook.describe({}, body)
    assert (envelope.event_id, envelope.topic) == ("evt_42", "invoice.paid")
    assert envelope.triggered_at == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert envelope.api_version == "2025-03-31.basil"


def test_a_body_is_read_as_the_drain_reads_it():
    # NaN is not JSON by the RFC, but Python's reader (which the drain uses) takes it: the
    # webhook keeps its own id rather than one from its hash, so Stripe's retry is a duplicate.
    body = json.dumps(stripe_event("invoice.paid", {"id": "in_1", "amount_due": float("nan")},
                                   event_id="evt_nan", created=EVENT_CREATED)).encode()
    assert b"NaN" in body
    assert hook.describe({}, body).event_id == "evt_nan"


@pytest.mark.parametrize("body", [b"not json", b"\xff\xfe", b"[1, 2]", b'{"type": "invoice.paid"}',
                                  b""])
def test_an_unreadable_body_gets_an_id_from_its_hash(body):
    envelope = hook.describe({}, body)
    assert (envelope.event_id, envelope.topic) == (body_hash_id(body), "unreadable")


# --- the pay gem's payloads ----------------------------------------------------------------

# Types Stripe sends that the hub has no canonical event for: stored and marked ignored.
# (subscription.trial_ended is not a Stripe type at all; invoice.updated here holds an
# invoice_payment.)
IGNORED = ["account.updated", "charge.succeeded", "charge.updated", "invoice.updated",
           "customer.subscription.trial_ended"]


PAY_FILES = sorted(path.stem for path in (SHARED / "stripe" / "pay").glob("*.json"))


@pytest.mark.parametrize("file_name", PAY_FILES)
def test_every_collected_payload_is_either_normalized_or_ignored(file_name):
    event = pay_event(file_name, "invoice.paid" if file_name == "invoice" else None)
    if event["type"] in IGNORED:
        assert event["type"] not in hook.TOPICS
    else:
        assert receive(event), f"{event['type']} gave no canonical event"


def test_a_deleted_customer():
    [event] = receive(pay_event("customer.deleted"))
    assert event.name == ev.CUSTOMER_DELETED
    assert event.customer == {"source_id": "cus_EGxrcooteA3WAb"}
    assert event.occurred_at == at(EVENT_CREATED)


def test_an_updated_customer_without_email_is_upserted_by_id():
    [event] = receive(pay_event("customer.updated"))
    assert event.name == ev.CUSTOMER_UPSERTED
    assert event.customer == {"source_id": "cus_1234", "created_at": at(1546497808)}


def test_a_paid_subscription_checkout_places_and_pays_an_order():
    placed, paid = receive(pay_event("checkout.session.completed"))
    assert [placed.name, paid.name] == [ev.ORDER_PLACED, ev.ORDER_PAID]
    assert placed.customer == {"source_id": "cus_M5wW9RPFk9xNZ5", "email": "chris@gorails.com",
                               "first_name": "Chris", "last_name": "Oliver"}
    assert placed.data == {
        "source_id": "cs_test_a1UejXx8ebIdTzFolicVypUAZpOBVkoQKDbaarXoPlPVtj8p0zujPEEhjT",
        "total": 1900, "currency": "USD", "financial_status": "paid", "is_subscription": True,
        "placed_at": at(EVENT_CREATED), "subscription_source_id": "sub_1LNkeSKXBGcbgpbZ7jMqOPSi",
    }
    assert paid.data == placed.data


@pytest.mark.parametrize("event_type, status, names", [
    ("checkout.session.completed", "unpaid", [ev.ORDER_PLACED]),  # a bank debit under way
    ("checkout.session.async_payment_succeeded", "paid", [ev.ORDER_PLACED, ev.ORDER_PAID]),
    ("checkout.session.async_payment_failed", "unpaid", [ev.ORDER_PLACED]),
])
def test_a_checkout_paid_by_a_delayed_method_is_paid_when_stripe_says_so(event_type, status, names):
    event = pay_event("checkout.session.completed", event_type)
    event["data"]["object"]["payment_status"] = status
    got = receive(event)
    assert [e.name for e in got] == names
    assert {e.data["financial_status"] for e in got} == {status}


@pytest.mark.parametrize("promotions, state",
                         [("opt_in", "subscribed"), ("opt_out", "unsubscribed")])
def test_checkout_consent_to_promotions_changes_email_consent(promotions, state):
    event = pay_event("checkout.session.completed")
    event["data"]["object"]["consent"] = {"promotions": promotions, "terms_of_service": None}
    consent = receive(event)[-1]
    assert consent.name == ev.CONSENT_CHANGED
    assert consent.data == {"channel": "email", "state": state, "consented_at": at(EVENT_CREATED)}
    assert consent.customer["email"] == "chris@gorails.com"


def test_a_checkout_that_did_not_ask_for_consent_changes_none():
    names = [event.name for event in receive(pay_event("checkout.session.completed"))]
    assert ev.CONSENT_CHANGED not in names


def test_a_partial_refund():
    [event] = receive(pay_event("charge.refunded"))
    assert event.name == ev.ORDER_REFUNDED
    assert event.data == {"source_id": "re_3LQOJoKXBGcbgpbZ10i9Mg75", "order_source_id": "pm_1234",
                          "amount": 500, "currency": "USD", "refunded_total": 500}
    assert event.customer == {"source_id": "cus_0dUMWLtzCTagWs"}


def test_a_second_partial_refund_counts_only_what_it_gave_back():
    charge = {**load_sample("shared:stripe/pay/charge.refunded.json")["object"],
              "amount_refunded": 1200, "refunds": None}  # API 2022-11-15 on: no refunds list
    event = stripe_event("charge.refunded", charge, previous_attributes={"amount_refunded": 500})
    [refunded] = receive(event)
    assert refunded.data == {"source_id": "ch_chargeid", "order_source_id": "pm_1234",
                             "amount": 700, "currency": "USD", "refunded_total": 1200}


def test_a_created_subscription_in_the_old_shape():
    [event] = receive(pay_event("subscription.created"))
    assert event.name == ev.SUBSCRIPTION_UPSERTED
    assert event.customer == {"source_id": "cus_00000000000000"}
    assert event.data == {
        "source_id": "sub_00000000000000", "status": "active",
        "plan": "FFBEGINNER_00000000000000", "plan_id": "FFBEGINNER_00000000000000",
        "interval": "month", "interval_count": 1, "amount": 600, "currency": "USD", "quantity": 2,
        "current_period_start": at(1486568724), "current_period_end": at(1488987924),
        "next_renewal_at": at(1488987924), "resumes_at": None, "trial_end": at(1467992724),
        "cancel_at_period_end": False, "canceled_at": None, "product_ids": ["prod_00000000000000"],
    }


def test_a_basil_subscription_takes_its_period_from_its_items():
    [event] = receive(pay_event("subscription.updated"))
    assert "current_period_end" not in event_object(pay_event("subscription.updated"))
    assert event.data["current_period_start"] == at(1486568724)
    assert event.data["current_period_end"] == at(1488987924)
    assert event.data["status"] == "canceled"
    assert event.data["next_renewal_at"] is None  # canceled: nothing renews


def test_a_subscription_canceled_at_period_end_has_no_next_renewal():
    event = pay_event("subscription.created")
    event["data"]["object"]["cancel_at_period_end"] = True
    [upserted] = receive(event)
    assert upserted.data["status"] == "active"
    assert upserted.data["cancel_at_period_end"] is True
    assert upserted.data["next_renewal_at"] is None
    assert upserted.data["current_period_end"] == at(1488987924)


def test_a_deleted_subscription_is_canceled():
    [event] = receive(pay_event("subscription.deleted"))
    assert event.name == ev.SUBSCRIPTION_CANCELED
    assert event.data["status"] == "canceled"
    assert event.data["canceled_at"] == at(1487872069)
    assert event.data["plan"] == "Beginner"  # a legacy plan's own name
    assert (event.data["amount"], event.data["quantity"]) == (300, 1)


def test_a_trial_about_to_end():
    [event] = receive(pay_event("subscription.trial_will_end"))
    assert event.name == ev.TRIAL_ENDING
    assert event.data["trial_end"] == at(1668971983)
    assert event.data["source_id"] == "sub_00000000000000"


def test_a_failed_renewal_payment_in_the_basil_shape():
    [event] = receive(pay_event("invoice.payment_failed"))
    assert event.name == ev.PAYMENT_FAILED
    assert event.customer == {"source_id": "cus_1234", "email": "customer@example.org",
                              "first_name": "Example", "last_name": "Customer"}
    assert event.data == {
        "source_id": "in_1234", "subscription_source_id": "sub_1234", "status": "failed",
        "amount": 24900, "currency": "USD", "attempt_count": 1,
        "next_retry_at": at(1745552783), "failure_reason": None, "decline_code": None,
        "hard_decline": False, "due_at": None, "paid_at": None,
        "update_payment_url": "https://invoice.stripe.com/",
    }


def test_a_payment_needing_the_customers_action():
    [event] = receive(pay_event("invoice.payment_action_required"))
    assert event.name == ev.PAYMENT_ACTION_REQUIRED
    assert event.data["status"] == "action_required"
    assert (event.data["amount"], event.data["currency"]) == (9184, "USD")
    assert event.data["subscription_source_id"] == "sub_1234"
    assert event.data["update_payment_url"] == "https://invoice.stripe.com/"


@pytest.mark.parametrize("event_type", ["invoice.paid", "invoice.payment_succeeded"])
def test_a_paid_invoice_is_a_succeeded_payment(event_type):
    [event] = receive(pay_event("invoice", event_type))
    assert event.name == ev.PAYMENT_SUCCEEDED
    assert event.customer == {"source_id": "cus_S9YwWMaQEgeJYO", "email": "missouri@example.org",
                              "first_name": "Missouri"}
    assert event.data["source_id"] == "in_1RFFohKXBGcbgpbZk9MxzDMc"
    assert event.data["status"] == "succeeded"
    assert (event.data["amount"], event.data["currency"]) == (24512, "USD")
    assert event.data["paid_at"] == at(1744986363)
    assert event.data["subscription_source_id"] is None  # a manual invoice


def test_an_upcoming_invoice_announces_the_renewal():
    [event] = receive(pay_event("invoice.upcoming"))
    assert event.name == ev.RENEWAL_UPCOMING
    assert event.data == {"subscription_source_id": "sub_1234", "renewal_at": at(1745689540),
                          "amount": 1900, "currency": "USD"}
    assert event.customer["email"] == "customer@example.org"


def test_an_updated_card():
    [event] = receive(pay_event("payment_method.updated"))
    assert event.name == ev.PAYMENT_METHOD_UPDATED
    assert event.customer == {"source_id": "cus_1234"}
    assert event.data == {"source_id": "pm_1000", "brand": "visa", "last4": "3184",
                          "exp_month": 12, "exp_year": 2035, "auto_updated": False}


def test_an_attached_card_is_on_file():
    [event] = receive(pay_event("payment_method.attached"))
    assert event.name == ev.PAYMENT_METHOD_UPDATED
    assert event.customer == {"source_id": "cus_1234"}
    assert event.data == {"source_id": "card_1JN6Z1KXBGcbgpbZ2AZJOYEZ", "brand": "visa",
                          "last4": "4242", "exp_month": 4, "exp_year": 2024, "auto_updated": False}


def test_a_detached_card_leaves_no_expiry_for_the_customer_it_was_detached_from():
    # The detached object's `customer` is null; previous_attributes names the customer.
    [event] = receive(pay_event("payment_method.detached"))
    assert event.name == ev.PAYMENT_METHOD_UPDATED
    assert event.customer == {"source_id": "cus_1234"}
    assert (event.data["source_id"], event.data["exp_month"], event.data["exp_year"]) == ("pm_1000", None, None)


def test_a_detached_card_is_enriched_with_the_customer_it_was_detached_from():
    with responses.RequestsMock() as api:
        api.get("https://stripe.test/v1/customers/cus_1234", json=CUSTOMER)
        enriched = enrich(pay_event("payment_method.detached"), STRIPE_API_BASE="https://stripe.test")
    assert receive(enriched)[0].customer["email"] == "ada@example.org"


@pytest.mark.parametrize("invoice_default, default_source, default", [
    ("pm_1000", None, "pm_1000"), (None, "card_9", "card_9"), (None, None, None)])
def test_an_updated_customer_names_the_card_stripe_charges(invoice_default, default_source, default):
    customer = {**stripe_resource("customer"), "default_source": default_source}
    customer["invoice_settings"] = {**customer["invoice_settings"], "default_payment_method": invoice_default}
    [event] = receive(stripe_event("customer.updated", customer, created=EVENT_CREATED))
    assert event.data == {"default_card": default}


def test_a_customer_payload_without_invoice_settings_says_nothing_of_its_default_card():
    [event] = receive(pay_event("customer.updated"))
    assert event.data == {}


# --- Stripe's published example objects (fixtures3.json) ---------------------------------

def test_published_customer_is_upserted():
    [event] = receive(published_event("customer", "customer.created"))
    assert event.name == ev.CUSTOMER_UPSERTED
    assert event.customer == {"source_id": "cus_QXg1o8vcGmoR32", "created_at": at(1234567890)}


def test_published_customer_with_contact_details():
    event = published_event("customer", "customer.updated")
    event_object(event).update(email=" Jenny.Rosen@Example.COM ", name="Jenny van Rosen",
                               phone="(555) 555-0123")
    [upserted] = receive(event)
    assert upserted.customer == {"source_id": "cus_QXg1o8vcGmoR32",
                                 "email": "jenny.rosen@example.com", "phone": "+15555550123",
                                 "first_name": "Jenny", "last_name": "van Rosen",
                                 "created_at": at(1234567890)}


def test_published_subscription():
    [event] = receive(published_event("subscription", "customer.subscription.updated"))
    assert event.data == {
        "source_id": "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw",
        "plan": "price_1PgafmB7WZ01zgkW6dKueIc5", "plan_id": "price_1PgafmB7WZ01zgkW6dKueIc5",
        "interval": "month", "interval_count": 1, "amount": 2000, "currency": "USD", "quantity": 1,
        "current_period_start": at(1896570518), "current_period_end": at(976287773),
        "next_renewal_at": None,  # cancel_at_period_end
        # Stripe's example pauses collection (mark_uncollectible), its status left `active`.
        "status": "paused", "resumes_at": None,
        "trial_end": at(1234567890), "cancel_at_period_end": True, "canceled_at": at(1234567890),
        "product_ids": ["prod_QXg1hqf4jFNsqG"],
    }


@pytest.mark.parametrize("event_type",
                         ["customer.subscription.paused", "customer.subscription.resumed"])
def test_published_subscription_paused_or_resumed_is_upserted(event_type):
    [event] = receive(published_event("subscription", event_type))
    assert event.name == ev.SUBSCRIPTION_UPSERTED


def test_an_old_shape_subscription_priced_by_nickname_and_product_name():
    sub = copy.deepcopy(stripe_resource("subscription"))
    item = sub["items"]["data"][0]
    period = {"current_period_start": item.pop("current_period_start"),
              "current_period_end": item.pop("current_period_end")}
    sub.update(period, cancel_at_period_end=False, cancel_at=None, canceled_at=None, pause_collection=None)
    item["price"]["product"] = {"id": "prod_box", "name": "Coffee box"}
    item["quantity"] = 3
    [event] = receive(stripe_event("customer.subscription.created", sub, created=EVENT_CREATED))
    assert event.data["current_period_end"] == at(976287773)
    assert event.data["next_renewal_at"] == at(976287773)
    assert (event.data["plan"], event.data["product_ids"]) == ("Coffee box", ["prod_box"])
    assert (event.data["amount"], event.data["quantity"]) == (6000, 3)
    item["price"]["nickname"] = "Monthly box"
    [event] = receive(stripe_event("customer.subscription.created", sub, created=EVENT_CREATED))
    assert event.data["plan"] == "Monthly box"


@pytest.mark.parametrize("stripe_status, status", [
    ("trialing", "trialing"), ("active", "active"), ("past_due", "past_due"),
    ("unpaid", "paused"), ("incomplete", "incomplete"), ("paused", "paused"),
    ("canceled", "canceled"), ("incomplete_expired", "expired"),
])
def test_subscription_statuses_in_the_hubs_vocabulary(stripe_status, status):
    sub = {**stripe_resource("subscription"), "status": stripe_status,
           "cancel_at_period_end": False, "cancel_at": None, "pause_collection": None}
    [event] = receive(stripe_event("customer.subscription.updated", sub))
    assert event.data["status"] == status
    renews = status in ("trialing", "active", "past_due")
    assert (event.data["next_renewal_at"] is not None) == renews



# --- paused collection and items of different intervals -----------------------------------

RESUMES = 1491666324  # 2017-04-08, a month after the sample's period end
PERIOD_END = 1488987924


def active_subscription_updated() -> dict:
    """The pay gem's active monthly subscription (300 × 2), sent as updated."""
    return pay_event("subscription.created", "customer.subscription.updated")


def utc_ts(*parts) -> int:
    return int(datetime(*parts, tzinfo=timezone.utc).timestamp())


@pytest.mark.parametrize("cancel_at, renewal", [
    # Billed on the 31st, capped to February's 28th: the first billing day after the resume
    # on March 15 is March 31 (https://docs.stripe.com/billing/subscriptions/billing-cycle).
    (None, at(utc_ts(2017, 3, 31, 10))),
    (utc_ts(2017, 3, 20), None),  # cancelled before it collects again
])
def test_a_pause_with_a_resume_date_renews_on_the_first_billing_day_after_it(cancel_at, renewal):
    event = active_subscription_updated()
    event_object(event).update(billing_cycle_anchor=utc_ts(2017, 1, 31, 10),
                               current_period_start=utc_ts(2017, 1, 31, 10),
                               current_period_end=utc_ts(2017, 2, 28, 10), cancel_at=cancel_at,
                               pause_collection={"behavior": "void", "resumes_at": utc_ts(2017, 3, 15)})
    [paused] = receive(event)
    assert (paused.data["status"], paused.data["next_renewal_at"]) == ("paused", renewal)


@pytest.mark.parametrize("behavior", ["keep_as_draft", "mark_uncollectible", "void"])
def test_paused_collection_pauses_the_subscription_until_it_is_cleared(behavior):
    # https://docs.stripe.com/billing/subscriptions/pause-payment: the status stays `active`.
    event = active_subscription_updated()
    event_object(event)["pause_collection"] = {"behavior": behavior, "resumes_at": RESUMES}
    [paused] = receive(event)
    assert (paused.data["status"], paused.data["resumes_at"]) == ("paused", at(RESUMES))
    # The renewal a month after the period's end is the first Stripe collects again.
    assert paused.data["next_renewal_at"] == at(RESUMES)
    event_object(event)["pause_collection"] = {"behavior": behavior, "resumes_at": None}
    [indefinite] = receive(event)
    assert (indefinite.data["status"], indefinite.data["next_renewal_at"]) == ("paused", None)
    event_object(event)["pause_collection"] = None
    [resumed] = receive(event)
    assert (resumed.data["status"], resumed.data["resumes_at"]) == ("active", None)
    assert resumed.data["next_renewal_at"] == at(PERIOD_END)


def test_items_of_different_intervals_are_each_read_by_their_own():
    event = active_subscription_updated()
    sub = event_object(event)
    # API 2025-03-31: no period on the subscription, one on each item.
    monthly = sub["items"]["data"][0]
    for key in ("current_period_start", "current_period_end"):
        monthly[key] = sub.pop(key)
    yearly = copy.deepcopy(monthly)
    yearly.update(id="si_yearly", quantity=1, current_period_end=PERIOD_END + 300 * 86400)
    yearly["price"].update(id="price_yearly", amount=12000, interval="year")
    sub["items"]["data"].append(yearly)
    [event] = receive(event)
    # 3.00 × 2 a month and 120.00 a year: 16.00 a month, renewing with the monthly item.
    assert (event.data["amount"], event.data["interval"], event.data["interval_count"]) == (1600, "month", 1)
    assert event.data["next_renewal_at"] == at(PERIOD_END)

def test_published_invoice_failing_to_finalize():
    [event] = receive(published_event("invoice", "invoice.payment_failed"))
    assert event.data == {
        "source_id": "in_1Pgc6tB7WZ01zgkWu9fdqL6I",
        "subscription_source_id": "subscription",  # parent.subscription_details
        "status": "failed", "amount": 1000, "currency": "USD", "attempt_count": 0,
        "next_retry_at": at(1234567890), "failure_reason": "idempotency_error",
        "decline_code": None, "hard_decline": False, "due_at": at(1234567890), "paid_at": None,
        "update_payment_url": None,
    }
    assert event.customer == {"source_id": "cus_QXg1o8vcGmoR32"}


def test_an_old_shape_invoice_names_its_subscription_at_top_level():
    invoice = {**stripe_resource("invoice"), "subscription": "sub_old", "parent": None}
    [event] = receive(stripe_event("invoice.paid", invoice))
    assert event.data["subscription_source_id"] == "sub_old"


@pytest.mark.parametrize("decline_code, hard", [("expired_card", True), ("stolen_card", True),
                                                ("insufficient_funds", False),
                                                ("do_not_honor", False)])
def test_a_decline_the_card_cannot_recover_from_is_hard(decline_code, hard):
    invoice = {**stripe_resource("invoice"), "last_finalization_error": None,
               "payment_intent": {"id": "pi_1", "last_payment_error": {
                   "type": "card_error", "code": "card_declined", "decline_code": decline_code,
                   "message": "Your card was declined."}}}
    [event] = receive(stripe_event("invoice.payment_failed", invoice))
    assert event.data["decline_code"] == decline_code
    assert event.data["hard_decline"] is hard
    assert event.data["failure_reason"] == "Your card was declined."


def test_published_upcoming_invoice():
    [event] = receive(published_event("invoice", "invoice.upcoming"))
    assert event.data == {"subscription_source_id": "subscription", "renewal_at": at(1234567890),
                          "amount": 1000, "currency": "USD"}


def test_published_charge_refunded_without_payment_intent_names_the_charge():
    charge = {**stripe_resource("charge"), "amount_refunded": 100, "refunded": True}
    [event] = receive(stripe_event("charge.refunded", charge))
    assert event.data == {"source_id": "ch_1PgafuB7WZ01zgkWXYmPNZs8",
                          "order_source_id": "ch_1PgafuB7WZ01zgkWXYmPNZs8",
                          "amount": 100, "currency": "USD", "refunded_total": 100}  # no list, no previous: the total
    assert event.customer == {}  # a guest charge: nobody to attach it to


def test_published_payment_method_automatically_updated():
    [event] = receive(published_event("payment_method", "payment_method.automatically_updated"))
    assert event.name == ev.PAYMENT_METHOD_UPDATED
    assert event.data == {"source_id": "pm_1Pgc75B7WZ01zgkWlHVgdEGJ", "brand": "visa",
                          "last4": "4242", "exp_month": 8, "exp_year": 2030, "auto_updated": True}


def test_published_legacy_card_expiring():
    card = {**stripe_resource("card"), "customer": "cus_QXg1o8vcGmoR32"}
    [event] = receive(stripe_event("customer.source.expiring", card, created=EVENT_CREATED))
    assert event.name == ev.PAYMENT_METHOD_EXPIRING
    assert event.customer == {"source_id": "cus_QXg1o8vcGmoR32"}
    assert event.data == {"source_id": "card_1PgaftB7WZ01zgkWm3waTcFp", "brand": "Visa",
                          "last4": "4242", "exp_month": 8, "exp_year": 2030, "auto_updated": False}


def test_published_unpaid_checkout_session_places_an_order_only():
    [event] = receive(published_event("checkout.session", "checkout.session.completed"))
    assert event.name == ev.ORDER_PLACED
    assert event.customer == {"email": "example@example.com"}
    assert event.data == {"source_id": "pi_1PgafyB7WZ01zgkWSjxsAJo3", "total": None,
                          "currency": None, "financial_status": "unpaid",
                          "is_subscription": False, "placed_at": at(1234567890),
                          "subscription_source_id": None}


def test_every_canonical_event_is_json_safe():
    for name, event_type in [("subscription.created", None), ("invoice.payment_failed", None),
                             ("checkout.session.completed", None), ("invoice", "invoice.paid")]:
        for event in receive(pay_event(name, event_type)):
            json.dumps(event.to_dict())


# --- ENRICH: the customer's email and name for events that carry its id only -------------

CUSTOMER = {"id": "cus_1234", "object": "customer", "email": "Ada@Example.org",
            "name": "Ada Lovelace", "phone": "+44 20 7946 0000", "created": 1700000000,
            "metadata": {}}


def enrich(event: dict, **overrides) -> dict:
    enrich_settings = settings(STRIPE_API_KEY="sk_test_123", **overrides)
    return hook.ENRICH[event["type"]](copy.deepcopy(event), enrich_settings)


@pytest.mark.parametrize("event_type", ["customer.subscription.updated", "invoice.payment_failed",
                                        "payment_method.updated", "customer.source.expiring",
                                        "payment_method.attached", "payment_method.detached"])
def test_events_carrying_a_customer_id_are_enriched(event_type):
    assert event_type in hook.ENRICH


def test_enrichment_fetches_the_customer_and_the_normalizer_uses_it():
    event = pay_event("payment_method.updated")
    with responses.RequestsMock() as api:
        api.get("https://stripe.test/v1/customers/cus_1234", json=CUSTOMER)
        enriched = enrich(event, STRIPE_API_BASE="https://stripe.test")
        assert api.calls[0].request.headers["Authorization"] == "Bearer sk_test_123"
    assert enriched["_customer"]["email"] == "Ada@Example.org"
    [updated] = receive(enriched)
    assert updated.customer == {"source_id": "cus_1234", "email": "ada@example.org",
                                "phone": "+442079460000", "first_name": "Ada",
                                "last_name": "Lovelace", "created_at": at(1700000000)}


def test_enrichment_goes_to_stripe_when_no_api_base_is_set():
    event = pay_event("invoice.payment_failed")
    with responses.RequestsMock() as api:
        api.get("https://api.stripe.com/v1/customers/cus_1234", json=CUSTOMER)
        api.get("https://api.stripe.com/v1/invoice_payments", json={"object": "list", "data": [], "has_more": False})
        enriched = enrich(event)
    [failed] = receive(enriched)
    assert failed.customer["email"] == "ada@example.org"  # fresher than the invoice's copy


def test_without_an_api_key_the_payload_is_left_as_it_is():
    event = pay_event("subscription.updated")
    with responses.RequestsMock():
        assert hook.ENRICH[event["type"]](event, settings()) == event


@pytest.mark.parametrize("status, error", [
    (404, {"type": "invalid_request_error", "code": "resource_missing",
           "message": "No such customer"}),
    (401, {"type": "invalid_request_error", "message": "Invalid API Key provided"}),
])
def test_when_stripe_refuses_the_event_still_applies_by_customer_id(status, error):
    event = pay_event("subscription.updated")
    with responses.RequestsMock() as api:
        api.get("https://stripe.test/v1/customers/cus_00000000000000", status=status,
                json={"error": error})
        enriched = enrich(event, STRIPE_API_BASE="https://stripe.test")
    assert enriched == event
    [upserted] = receive(enriched)
    assert upserted.customer == {"source_id": "cus_00000000000000"}


@pytest.mark.parametrize("answer", [
    {"status": 503, "json": {"error": {"type": "api_error", "message": "Stripe is having trouble"}}},
    {"status": 429, "json": {"error": {"type": "invalid_request_error", "code": "rate_limit",
                                       "message": "Too many requests hit the API too quickly."}}},
    {"body": requests.ConnectionError("connection reset")},
])
def test_when_stripe_does_not_answer_the_event_waits_to_try_again(answer):
    event = pay_event("subscription.updated")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        api.get("https://stripe.test/v1/customers/cus_00000000000000", **answer)
        with pytest.raises(RetryLater, match=r"Stripe did not answer GET /v1/customers/cus_00000000000000"):
            enrich(event, STRIPE_API_BASE="https://stripe.test")


# --- why a payment failed: since API 2025-03-31, on the invoice's payment -------------------

def declined_intent(decline_code: str, **error) -> dict:
    """Stripe's published payment intent, failed the way a declined renewal fails."""
    return {**stripe_resource("payment_intent"), "id": "pi_renewal", "customer": "cus_1234",
            "status": "requires_payment_method", "last_payment_error": {
                "type": "card_error", "code": "card_declined", "decline_code": decline_code,
                "message": "Your card was declined.", **error}}


@pytest.mark.parametrize("decline_code, hard", [("stolen_card", True), ("insufficient_funds", False)])
def test_a_basil_invoice_failure_reads_the_decline_from_its_payment(decline_code, hard):
    event = pay_event("invoice.payment_failed")
    assert "payment_intent" not in event_object(event)  # basil: the invoice names no payment
    with FakeStripe(key="sk_test_123") as api:
        api.add_invoice_payment(event_object(event), declined_intent(decline_code))
        [failed] = receive(enrich(event, STRIPE_API_BASE=api.url))
    assert (failed.data["decline_code"], failed.data["hard_decline"]) == (decline_code, hard)
    assert failed.data["failure_reason"] == "Your card was declined."


def test_the_issuers_do_not_try_again_advice_is_a_hard_decline():
    event = pay_event("invoice.payment_failed")
    with FakeStripe(key="sk_test_123") as api:
        api.add_invoice_payment(event_object(event), declined_intent("generic_decline",
                                                                     advice_code="do_not_try_again"))
        [failed] = receive(enrich(event, STRIPE_API_BASE=api.url))
    assert (failed.data["decline_code"], failed.data["hard_decline"]) == ("generic_decline", True)


def test_a_failed_payment_intent_fills_the_decline_of_the_invoice_it_pays():
    invoice = event_object(pay_event("invoice.payment_failed"))
    event = stripe_event("payment_intent.payment_failed", declined_intent("expired_card"),
                         created=EVENT_CREATED)
    with FakeStripe(key="sk_test_123") as api:
        api.add_invoice_payment(invoice, declined_intent("expired_card"))
        [failed] = receive(enrich(event, STRIPE_API_BASE=api.url))
    assert failed.name == ev.PAYMENT_FAILED
    assert (failed.data["source_id"], failed.data["subscription_source_id"]) == ("in_1234", "sub_1234")
    assert (failed.data["decline_code"], failed.data["hard_decline"]) == ("expired_card", True)
    assert (failed.data["attempt_count"], failed.data["next_retry_at"]) == (1, at(1745552783))
    assert failed.customer["source_id"] == "cus_1234"


def test_a_failed_payment_intent_paying_no_invoice_changes_nothing():
    event = stripe_event("payment_intent.payment_failed", declined_intent("stolen_card"))
    with FakeStripe(key="sk_test_123") as api:
        assert receive(enrich(event, STRIPE_API_BASE=api.url)) == []


# --- the end of collection -----------------------------------------------------------------

def test_an_open_invoice_with_no_next_attempt_has_exhausted_its_retries():
    invoice = {**event_object(pay_event("invoice.payment_failed")), "attempt_count": 4,
               "next_payment_attempt": None}
    [event] = receive(stripe_event("invoice.payment_failed", invoice))
    assert (event.name, event.data["status"], event.data["next_retry_at"]) == (
        ev.PAYMENT_FAILED, "retries_exhausted", None)


def test_an_invoice_the_customer_pays_by_itself_has_no_retries_to_exhaust():
    invoice = {**event_object(pay_event("invoice.payment_failed")), "collection_method": "send_invoice",
               "next_payment_attempt": None}
    assert receive(stripe_event("invoice.payment_failed", invoice))[0].data["status"] == "failed"


@pytest.mark.parametrize("event_type, stripe_status, status", [
    ("invoice.marked_uncollectible", "uncollectible", "uncollectible"), ("invoice.voided", "void", "void")])
def test_an_invoice_stripe_stops_collecting_closes_the_payment(event_type, stripe_status, status):
    invoice = {**stripe_resource("invoice"), "status": stripe_status, "next_payment_attempt": None}
    [event] = receive(stripe_event(event_type, invoice))
    assert (event.name, event.data["source_id"], event.data["status"]) == (
        ev.PAYMENT_CLOSED, "in_1Pgc6tB7WZ01zgkWu9fdqL6I", status)
    assert event_type in hook.ENRICH  # its customer is fetched like any invoice's


RENEWS = 1_800_000_000  # the subscription's period ends, and it renews, then


def scheduled(phases: list[tuple[int, int | None, object, list]], end_behavior="release", status="active",
              renews=RENEWS) -> dict:
    """A subscription_schedule.updated of Stripe's published schedule with these phases (start,
    end, price: a price object, or an id when not expanded; discounts), the first under way,
    ENRICH's subscription renewing at `renews` beside it."""
    schedule = stripe_schedule("sub_1", "cus_1", phases, quantity=2, status=status, end_behavior=end_behavior)
    subscription = copy.deepcopy(stripe_resource("subscription"))
    subscription.update({"id": "sub_1", "customer": "cus_1", "cancel_at_period_end": False, "cancel_at": None,
                         "pause_collection": None})
    subscription["items"]["data"][0]["current_period_end"] = renews
    return {**stripe_event("subscription_schedule.updated", schedule, created=EVENT_CREATED),
            "_subscription": subscription}


PLUS = {"id": "price_plus", "object": "price", "unit_amount": 4000, "currency": "usd"}
MONTH = 30 * 86400


@pytest.mark.parametrize("phases, end_behavior, status, charged", [
    # The next phase starts as the period ends: the renewal bills its items (2 × 40.00).
    ([(RENEWS - MONTH, RENEWS, "price_now", []), (RENEWS, RENEWS + MONTH, PLUS, [])], "release", "active", 8000),
    # The renewal falls in the phase under way: the subscription's own price.
    ([(RENEWS - MONTH, RENEWS + MONTH, "price_now", []), (RENEWS + MONTH, None, PLUS, [])], "release", "active", None),
    # Past the last phase a released subscription keeps its items; a cancelled one does not renew on them.
    ([(RENEWS - 2 * MONTH, RENEWS - MONTH, "price_now", []), (RENEWS - MONTH, RENEWS, PLUS, [])], "release",
     "active", 8000),
    ([(RENEWS - 2 * MONTH, RENEWS - MONTH, "price_now", []), (RENEWS - MONTH, RENEWS, PLUS, [])], "cancel",
     "active", None),
    ([(RENEWS - MONTH, RENEWS, "price_now", []), (RENEWS, RENEWS + MONTH, PLUS, [{"coupon": "c"}])], "release",
     "active", None),  # a discount the hub cannot price
    ([(RENEWS - MONTH, RENEWS, "price_now", []), (RENEWS, RENEWS + MONTH, "price_plus", [])], "release",
     "active", None),  # its price not expanded
    ([(RENEWS - MONTH, RENEWS, "price_now", []), (RENEWS, RENEWS + MONTH, PLUS, [])], "release", "released", None),
])
def test_a_schedule_tells_what_the_next_renewal_bills(phases, end_behavior, status, charged):
    payload = scheduled(phases, end_behavior, status)
    [event] = hook.TOPICS["subscription_schedule.updated"](payload, hook.describe({}, json.dumps(payload).encode()))
    assert event.name == ev.RENEWAL_UPCOMING and event.data["subscription_source_id"] == "sub_1"
    assert event.data["renewal_at"] == datetime.fromtimestamp(RENEWS, timezone.utc)
    if charged is None:
        assert event.data.get("amount") is None and event.data["priced_as_subscription"] is True
    else:
        assert (event.data["amount"], event.data["currency"]) == (charged, "USD")


def test_the_events_listing_asks_stripe_for_at_most_20_types():
    # Stripe's Events API takes at most 20 `types[]` (https://docs.stripe.com/api/events/list).
    assert len(LISTED_TYPES) <= 20
    assert {"invoice.voided", "invoice.marked_uncollectible", "invoice.payment_failed"} <= set(LISTED_TYPES)


def test_reconciliation_lists_every_event_type_but_those_others_carry_in_calls_of_at_most_20():
    listed = [params["types"] for stream, (resource, params, _) in STREAMS.items() if resource == "events"]
    assert all(len(types) <= 20 for types in listed)
    assert set(hook.TOPICS) - {t for types in listed for t in types} == {
        "invoice.payment_succeeded", "payment_intent.payment_failed", "payment_method.attached",
        "payment_method.detached"}


@pytest.mark.parametrize("stripe_status, attempts, topic", [
    ("void", 2, "invoice.voided"), ("uncollectible", 4, "invoice.marked_uncollectible"),
    ("void", 0, None)])  # a draft voided before any charge: nothing the hub tracks
def test_backfill_lists_a_failed_invoice_stripe_stopped_collecting(stripe_status, attempts, topic):
    invoice = {**event_object(pay_event("invoice.payment_failed")), "status": stripe_status,
               "attempt_count": attempts}
    item = invoice_item(invoice)
    assert (item.topic if item else None) == topic


def test_a_change_of_items_fetches_the_invoice_it_made_and_reads_stripes_proration():
    event = pay_event("subscription.updated")
    event["data"]["previous_attributes"] = {"items": event_object(event)["items"]}
    event_object(event)["latest_invoice"] = "in_1000"
    invoice = {"id": "in_1000", "object": "invoice", "billing_reason": "subscription_update", "lines": {
        "object": "list", "data": [
            {"id": "il_1", "object": "line_item", "amount": -1210, "unit_amount_decimal": "-1210",
             "parent": {"type": "subscription_item_details", "subscription_item_details": {"proration": True}}},
            {"id": "il_2", "object": "line_item", "amount": 1935,
             "parent": {"type": "subscription_item_details", "subscription_item_details": {"proration": True}}},
            {"id": "il_3", "object": "line_item", "amount": 4000,
             "parent": {"type": "subscription_item_details", "subscription_item_details": {"proration": False}}}]}}
    with responses.RequestsMock() as api:
        api.get("https://stripe.test/v1/customers/cus_00000000000000", json=CUSTOMER)
        api.get("https://stripe.test/v1/invoices/in_1000", json=invoice)
        enriched = enrich(event, STRIPE_API_BASE="https://stripe.test")
    [upserted] = receive(enriched)
    assert upserted.data["proration_amount"] == 725


# --- chargebacks ----------------------------------------------------------------------------

def dispute(*moves: int, **fields) -> dict:
    """Stripe's published dispute of a 10.00 USD charge, with the balance transactions it made
    (a withdrawal is negative, a reinstatement positive; the dispute fee is apart)."""
    return {**stripe_resource("dispute"), "payment_intent": "pi_disputed", "status": "needs_response",
            "balance_transactions": [{"object": "balance_transaction", "amount": amount, "currency": "usd",
                                      "fee": 1500 if amount < 0 else -1500, "type": "adjustment"}
                                     for amount in moves], **fields}


def listed_refund(refund_id: str, amount: int, status: str) -> dict:
    return {**stripe_resource("refund"), "id": refund_id, "charge": "ch_1", "payment_intent": "pi_1",
            "amount": amount, "status": status}


def test_a_charges_refunds_as_listed_say_what_it_still_gives_back():
    charge = {**load_sample("shared:stripe/pay/charge.refunded.json")["object"], "id": "ch_1",
              "payment_intent": "pi_1", "amount_refunded": 2500}
    event = {**stripe_event("charge.refunded", charge, created=EVENT_CREATED),
             "_refunds": [listed_refund("re_2", 1000, "succeeded"), listed_refund("re_1", 1500, "failed")]}
    [refunded] = receive(event)
    assert (refunded.data["order_source_id"], refunded.data["refunded_total"]) == ("pi_1", 1000)


@pytest.mark.parametrize("status, total", [("failed", 0), ("canceled", 0), ("succeeded", 1500)])
def test_a_refund_that_changed_gives_its_charges_total_again(status, total):
    refund = listed_refund("re_1", 1500, status)
    event = {**stripe_event("refund.updated", refund, created=EVENT_CREATED), "_refunds": [refund]}
    [changed] = receive(event)
    assert changed.name == ev.ORDER_REFUNDED and changed.customer == {}
    assert (changed.data["order_source_id"], changed.data["refunded_total"]) == ("pi_1", total)


def test_a_failed_refund_without_its_charges_refunds_changes_nothing():
    assert receive(stripe_event("refund.failed", listed_refund("re_1", 1500, "failed"))) == []


def test_the_charges_refunds_are_listed_from_stripe():
    refund = listed_refund("re_1", 1500, "failed")
    with FakeStripe(key="sk_test_123") as api:
        api.refunds = [refund, {**refund, "id": "re_other", "charge": "ch_other"}]
        enriched = enrich(stripe_event("refund.failed", refund), STRIPE_API_BASE=api.url)
        assert [c.query for c in api.calls if c.path == "/v1/refunds"] == [{"charge": ["ch_1"], "limit": ["100"]}]
    assert [r["id"] for r in enriched["_refunds"]] == ["re_1"]


def test_every_page_of_a_charges_refunds_is_counted():
    """Stripe lists at most 100 objects a page (https://docs.stripe.com/api/pagination): a
    charge refunded 101 times in parts gives back all 101."""
    refunds = [listed_refund(f"re_{n:03}", 100, "succeeded") for n in range(101, 0, -1)]  # newest first
    with FakeStripe(key="sk_test_123") as api:
        api.refunds = refunds
        enriched = enrich(stripe_event("refund.updated", refunds[0], created=EVENT_CREATED), STRIPE_API_BASE=api.url)
        asked = [c.query for c in api.calls if c.path == "/v1/refunds"]
    assert asked[1].get("starting_after") == ["re_002"]  # the second page after the first one's last
    [changed] = receive(enriched)
    assert changed.data["refunded_total"] == 10100


def test_a_chargeback_gives_the_disputed_money_back_as_a_refund_does():
    [event] = receive(stripe_event("charge.dispute.funds_withdrawn", dispute(-1000), created=EVENT_CREATED))
    assert event.name == ev.ORDER_REFUNDED
    assert event.data == {"source_id": "dp_1Pgc71B7WZ01zgkWMevJiAUx", "order_source_id": "pi_disputed",
                          "amount": 1000, "currency": "USD"}


def test_a_dispute_won_brings_back_what_was_reinstated():
    won = dispute(-1000, 1000, status="won")
    [event] = receive(stripe_event("charge.dispute.funds_reinstated", won, created=EVENT_CREATED))
    assert event.data["amount"] == -1000


def test_a_dispute_in_another_currency_than_the_account_counts_the_disputed_amount():
    eur = dispute(status="lost", currency="eur", balance_transactions=[{"amount": -1090, "currency": "usd"}])
    [event] = receive(stripe_event("charge.dispute.funds_withdrawn", eur, created=EVENT_CREATED))
    assert (event.data["amount"], event.data["currency"]) == (1000, "EUR")


def test_a_dispute_is_enriched_with_its_charges_customer():
    charge = {**stripe_resource("charge"), "customer": "cus_disputer", "payment_intent": "pi_disputed"}
    event = stripe_event("charge.dispute.funds_withdrawn", dispute(-1000), created=EVENT_CREATED)
    with FakeStripe(key="sk_test_123") as api:
        api.charges[charge["id"]] = charge
        api.customers.append({**stripe_resource("customer"), "id": "cus_disputer", "email": "Dee@Example.com"})
        [event] = receive(enrich(event, STRIPE_API_BASE=api.url))
    assert (event.customer["source_id"], event.customer["email"]) == ("cus_disputer", "dee@example.com")


def test_a_dispute_whose_charge_stripe_cannot_find_still_names_its_payment():
    event = stripe_event("charge.dispute.funds_withdrawn", dispute(-1000), created=EVENT_CREATED)
    with FakeStripe(key="sk_test_123") as api:
        [event] = receive(enrich(event, STRIPE_API_BASE=api.url))
    assert (event.customer, event.data["order_source_id"]) == ({}, "pi_disputed")


# --- credit notes ---------------------------------------------------------------------------

def credit_note(**fields) -> dict:
    """Stripe's published credit note, on a paid invoice, 16.90 credited outside of Stripe."""
    return {**stripe_resource("credit_note"), "type": "post_payment", "out_of_band_amount": 1690,
            "voided_at": None, **fields}


def test_a_credit_note_credited_outside_stripe_gives_that_money_back():
    [event] = receive(stripe_event("credit_note.created", credit_note(), created=EVENT_CREATED))
    assert event.name == ev.ORDER_REFUNDED
    assert event.data == {"source_id": "cn_1Pgc75B7WZ01zgkWJMPt5riP", "order_source_id": "in_1Pgc75B7WZ01zgkWYv4iMwt7",
                          "amount": 1690, "currency": "USD"}
    assert event.customer == {"source_id": "cus_QXg1o8vcGmoR32"}


def test_a_voided_credit_note_takes_back_what_it_gave():
    voided = credit_note(status="void", voided_at=EVENT_CREATED)
    [event] = receive(stripe_event("credit_note.voided", voided, created=EVENT_CREATED))
    assert event.data["amount"] == -1690


def test_a_credit_note_refunded_through_stripe_or_to_the_balance_is_told_by_others():
    """Its refund part is a Refund (charge.refunded); its credit part pays the next invoice."""
    assert receive(stripe_event("credit_note.created", credit_note(out_of_band_amount=None),
                                created=EVENT_CREATED)) == []
