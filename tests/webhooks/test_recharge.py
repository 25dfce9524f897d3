"""Recharge webhooks: both signature schemes, the envelope, and every topic normalized (design §4)."""
from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
from datetime import datetime, timezone

import pytest
from sqlalchemy import select
from werkzeug.datastructures import Headers

from hub.config import Settings
from hub.errors import SignatureInvalid, SourceNotConfigured
from hub.models import InboxEvent, Payment, Subscriber
from hub.sync.apply import apply_event
from hub.sync.inbox import drain_inbox
from tests.hub.web.conftest import add_staff, log_in
from tests.samples import API_HEADERS, load_sample, post
from webhooks import UNREADABLE, body_hash_id
from webhooks.recharge import webhook as recharge

SECRET = "rc-client-secret"
CHARGE_ID, SUB_ID, CUSTOMER_ID, SHOPIFY_ID = "580293301", "1111111", "33333333", "6270530322618"


def at(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def settings(secret: str = SECRET) -> Settings:
    return Settings.from_env(env={}, overrides={"RECHARGE_WEBHOOK_SECRET": secret})


def legacy_headers(body: bytes, secret: str = SECRET) -> dict:
    """What Recharge's legacy scheme sends: hex SHA-256 of client secret + raw body."""
    return {"X-Recharge-Hmac-Sha256": hashlib.sha256(secret.encode() + body).hexdigest()}


def timestamped_headers(body: bytes, secret: str = SECRET, t: int | None = None) -> dict:
    """What Recharge's timestamp-bound scheme sends: HMAC-SHA256 of "<t>.<raw body>"."""
    t = int(time.time()) if t is None else t
    sig = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Recharge-Webhook-Timestamp": str(t), "X-Recharge-Webhook-Signature": f"t={t},v1={sig}"}


def sample(name: str) -> dict:
    """A Recharge body: published API responses (tests/fixtures/recharge) or ours from the docs."""
    if name in ("customer", "customer_updated", "subscription", "subscription_cancelled",
                "subscription_activated"):
        return load_sample(f"shared:recharge/{name}.json")
    return load_sample(f"recharge/{name}.json")


def normalize(topic: str, payload: dict):
    body = json.dumps(payload).encode()
    envelope = recharge.describe({"X-Recharge-Topic": topic}, body)
    assert envelope.topic == topic
    return recharge.TOPICS[topic](payload, envelope)


def only(topic: str, payload: dict):
    events = normalize(topic, payload)
    assert len(events) == 1
    return events[0]


# --- verify -------------------------------------------------------------------------------

BODY = json.dumps(load_sample("recharge/charge_paid.json")).encode()


@pytest.mark.parametrize("make", [dict, Headers, lambda h: {k.lower(): v for k, v in h.items()}])
def test_verify_accepts_either_scheme_in_any_header_casing(make):
    recharge.verify(settings(), make(timestamped_headers(BODY)), BODY)
    recharge.verify(settings(), make(legacy_headers(BODY)), BODY)
    recharge.verify(settings(), make({**legacy_headers(BODY), **timestamped_headers(BODY)}), BODY)


@pytest.mark.parametrize("headers", [
    pytest.param(legacy_headers(BODY, "another-secret"), id="legacy-wrong-secret"),
    pytest.param(legacy_headers(BODY + b" "), id="legacy-other-body"),
    pytest.param({"X-Recharge-Hmac-Sha256": hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()},
                 id="legacy-computed-as-hmac"),
    pytest.param(timestamped_headers(BODY, "another-secret"), id="timestamped-wrong-secret"),
    pytest.param(timestamped_headers(BODY + b" "), id="timestamped-other-body"),
    pytest.param(timestamped_headers(BODY, t=int(time.time()) - 49 * 3600), id="timestamped-too-old"),
    pytest.param(timestamped_headers(BODY, t=int(time.time()) + 49 * 3600), id="timestamped-too-far-ahead"),
    pytest.param({"X-Recharge-Webhook-Signature": "v1=abc"}, id="timestamped-no-t"),
    pytest.param({"X-Recharge-Webhook-Signature": "t=١٢٣,v1=abc"}, id="timestamped-non-ascii-digits"),
    # A failing timestamped signature is not rescued by a matching legacy one.
    pytest.param({**legacy_headers(BODY), **timestamped_headers(BODY, "another-secret")}, id="timestamped-wins"),
    pytest.param({"Content-Type": "application/json"}, id="missing"),
    pytest.param({}, id="no-headers"),
])
def test_verify_refuses_wrong_stale_or_missing_signatures(headers):
    with pytest.raises(SignatureInvalid):
        recharge.verify(settings(), headers, BODY)


def test_verify_refuses_everything_when_the_secret_is_not_set():
    with pytest.raises(SourceNotConfigured, match="RECHARGE_WEBHOOK_SECRET"):
        recharge.verify(settings(""), legacy_headers(BODY, ""), BODY)


# --- describe -----------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b"", b"not json", b"[]", b"null", b"\xff\xfe\x00", b'{"charge": 1}', b'{"charge": {"id": null}}',
    b'{"charge": {"id": true}}', b'{"charge": {"id": ""}}', b'{"widget": {"id": 1}}',
    b'{"charge": {"id": {"nested": 1}}}', b"[" * 100_000, b'{"charge": {"id": 1, "updated_at": "\\ud800"}}',
])
def test_describe_never_raises_and_keeps_unreadable_bodies_by_their_hash(body):
    envelope = recharge.describe({"X-Recharge-Topic": "charge/paid"}, body)
    if envelope.topic == UNREADABLE:
        assert envelope.event_id == body_hash_id(body)


def test_describe_dedupes_retries_of_one_delivery_and_tells_changes_apart():
    payload = sample("charge_failed")
    body = json.dumps(payload).encode()
    first = recharge.describe({"X-Recharge-Topic": "charge/failed"}, body)
    again = recharge.describe(Headers({"x-recharge-topic": "charge/failed"}), body)
    assert first.event_id == again.event_id
    assert first.triggered_at == at(2022, 4, 9, 4, 0, 11)
    retried = copy.deepcopy(payload)
    retried["charge"].update(charge_attempts=2, updated_at="2022-04-12T04:00:09+00:00")
    changed = recharge.describe({"X-Recharge-Topic": "charge/failed"}, json.dumps(retried).encode())
    assert changed.event_id != first.event_id
    undated = [{"charge": {"id": 7, "status": "error", "charge_attempts": n}} for n in (1, 2)]
    ids = {recharge.describe({"X-Recharge-Topic": "charge/failed"}, json.dumps(body).encode()).event_id
           for body in undated}
    assert len(ids) == 2


@pytest.mark.parametrize("name", ["charge_paid", "charge_failed", "charge_refunded", "subscription", "customer"])
def test_describe_guesses_no_topic_when_the_header_is_missing(name):
    body = json.dumps(sample(name)).encode()
    for headers in ({}, {"X-Recharge-Topic": ""}, {"X-Recharge-Topic": "  "}):
        assert recharge.describe(headers, body).topic == UNREADABLE


# --- normalizers --------------------------------------------------------------------------

def test_customer_is_upserted_with_its_shopify_customer_id_when_it_has_one():
    event = only("customer/created", sample("customer"))
    assert event.name == "customer.upserted" and event.source == "recharge"
    assert event.customer == {"source_id": "82940007", "email": "testtesttest5@test.dk", "first_name": "Niels",
                              "last_name": "Bohr", "created_at": at(2022, 3, 9, 2, 36, 35)}
    linked = copy.deepcopy(sample("customer_updated"))
    linked["customer"]["external_customer_id"]["ecommerce"] = SHOPIFY_ID
    event = only("customer/updated", linked)
    assert event.customer["shopify_customer_id"] == SHOPIFY_ID
    assert event.occurred_at == at(2022, 3, 9, 3, 3, 49)


def test_customer_deleted():
    assert only("customer/deleted", sample("customer")).name == "customer.deleted"


def test_subscription_carries_plan_cadence_and_next_charge():
    event = only("subscription/created", sample("subscription"))
    assert event.name == "subscription.upserted"
    assert event.customer == {"source_id": CUSTOMER_ID}
    assert event.occurred_at == at(2022, 3, 10, 12, 13, 28)
    d = event.data
    assert (d["source_id"], d["status"], d["plan"]) == (SUB_ID, "active", "Test product - 972-1")
    assert d["plan_id"] == "23123123123"
    assert (d["interval"], d["interval_count"], d["quantity"]) == ("day", 30, 1)
    assert d["next_renewal_at"] == at(2022, 4, 9, 4)  # the day's midnight in Eastern Time (EDT)
    assert d["product_ids"] == ["123123"] and d["canceled_at"] is None
    # presentment_currency is null (the store's currency, which the object does not name):
    # the price is not kept in an unknown currency.
    assert "amount" not in d and "currency" not in d


@pytest.mark.parametrize("charge_date, starts", [("2022-01-09", (2022, 1, 9, 5)),   # EST, UTC-5
                                                 ("2022-07-09", (2022, 7, 9, 4))])  # EDT, UTC-4
def test_a_charge_date_starts_at_midnight_eastern_time_as_recharge_charges_it(charge_date, starts):
    payload = copy.deepcopy(sample("subscription"))
    payload["subscription"]["next_charge_scheduled_at"] = charge_date
    assert only("subscription/updated", payload).data["next_renewal_at"] == at(*starts)


def test_subscription_amount_in_its_presentment_currency_and_prepaid_charges():
    payload = copy.deepcopy(sample("subscription"))
    payload["subscription"].update(presentment_currency="usd", quantity=2)
    assert only("subscription/updated", payload).data.items() >= {"amount": 9800, "currency": "USD"}.items()
    payload["subscription"].update(is_prepaid=True, order_interval_frequency=1, charge_interval_frequency=3,
                                   order_interval_unit="month")
    d = only("subscription/updated", payload).data
    assert (d["amount"], d["interval"], d["interval_count"]) == (29400, "month", 3)


@pytest.mark.parametrize("topic", ["subscription/cancelled", "subscription/deleted", "subscription/updated"])
def test_cancelled_subscription_carries_when_and_why(topic):
    event = only(topic, sample("subscription_cancelled"))
    assert event.name == "subscription.canceled"
    d = event.data
    assert (d["status"], d["cancellation_reason"], d["next_renewal_at"]) == ("canceled", "some reason", None)
    assert d["canceled_at"] == datetime(2022, 3, 11, 10, 19, 18, 637636, tzinfo=timezone.utc)


@pytest.mark.parametrize("topic", ["subscription/activated", "subscription/skipped", "subscription/unskipped",
                                   "subscription/swapped", "subscription/updated"])
def test_subscription_changes_upsert_the_state_the_object_shows(topic):
    payload = copy.deepcopy(sample("subscription_activated"))
    payload["subscription"]["next_charge_scheduled_at"] = "2022-05-09"
    event = only(topic, payload)
    assert event.name == "subscription.upserted"
    assert (event.data["status"], event.data["next_renewal_at"]) == ("active", at(2022, 5, 9, 4))


def test_paused_topic_pauses_even_before_the_object_says_so():
    d = only("subscription/paused", sample("subscription")).data
    assert (d["status"], d["next_renewal_at"]) == ("paused", None)


@pytest.mark.parametrize("topic,name", [("charge/created", "charge_created"), ("charge/upcoming", "charge_upcoming")])
def test_queued_and_upcoming_charges_announce_the_renewal(topic, name):
    event = only(topic, sample(name))
    assert event.name == "renewal.upcoming"
    assert event.data == {"subscription_source_id": SUB_ID, "renewal_at": at(2022, 4, 9, 4),
                          "amount": 4900, "currency": "USD"}


def test_a_charge_already_made_at_checkout_announces_no_renewal():
    """charge/created fires for a checkout's charge too, made at once (status success): its date
    is today's, and the next renewal is the subscription's next_charge_scheduled_at."""
    paid = copy.deepcopy(sample("charge_created"))
    paid["charge"].update(status="success", processed_at="2022-03-09T15:02:11+00:00", scheduled_at="2022-03-09")
    assert normalize("charge/created", paid) == []


def test_a_renewal_notice_sent_before_the_date_moved_does_not_move_it_back(tmp_path):
    from hub.db.engine import Storage
    from hub.models import Base, Subscription

    storage = Storage("sqlite:///" + str(tmp_path / "hub.db"))
    Base.metadata.create_all(storage.engine)
    moved = copy.deepcopy(sample("subscription"))
    moved["subscription"].update(next_charge_scheduled_at="2022-04-23", updated_at="2022-04-02T10:00:00+00:00")
    late_notice = copy.deepcopy(sample("charge_upcoming"))
    late_notice["charge"].update(updated_at="2022-04-01T10:00:00+00:00")  # sent before the date moved
    with storage.session() as session:
        for topic, payload in (("subscription/updated", moved), ("charge/upcoming", late_notice)):
            for event in normalize(topic, payload):
                apply_event(session, event)
        session.flush()
        held = session.scalar(select(Subscription.next_renewal_at).where(Subscription.source_id == SUB_ID))
    assert held.replace(tzinfo=timezone.utc) == at(2022, 4, 23, 4)


def test_a_charge_merging_two_subscriptions_announces_each_renewal_with_its_own_price():
    payload = copy.deepcopy(sample("charge_upcoming"))
    coffee = payload["charge"]["line_items"][0]
    payload["charge"]["line_items"].append({**coffee, "purchase_item_id": 2222222, "title": "Filters",
                                            "total_price": "6.00", "unit_price": "6.00"})
    payload["charge"]["total_price"] = "55.00"
    events = normalize("charge/upcoming", payload)
    assert [(e.data["subscription_source_id"], e.data["amount"], e.data["renewal_at"]) for e in events] == [
        (SUB_ID, 4900, at(2022, 4, 9, 4)), ("2222222", 600, at(2022, 4, 9, 4))]


def test_failed_charge_feeds_dunning_with_its_retry_date_and_attempts():
    event = only("charge/failed", sample("charge_failed"))
    assert event.name == "payment.failed"
    assert event.customer == {"source_id": CUSTOMER_ID, "email": "niels.bohr@example.com", "phone": "+4535325200",
                              "first_name": "Niels", "last_name": "Bohr", "shopify_customer_id": SHOPIFY_ID}
    assert event.data == {"source_id": CHARGE_ID, "subscription_source_id": SUB_ID, "status": "failed",
                          "attempt_count": 1, "due_at": at(2022, 4, 9, 4), "amount": 4900, "currency": "USD",
                          "next_retry_at": at(2022, 4, 12, 4), "failure_reason": "Your card was declined.",
                          "decline_code": "CUSTOMER_NEEDS_TO_UPDATE_CARD", "hard_decline": True}


def test_max_retries_reached_leaves_the_cycle_owed_with_no_retry_to_come():
    d = only("charge/max_retries_reached", sample("charge_max_retries_reached")).data
    assert (d["source_id"], d["status"], d["attempt_count"]) == (CHARGE_ID, "retries_exhausted", 8)
    assert d["next_retry_at"] is None


def test_paid_charge_is_the_payment_of_the_cycle():
    event = only("charge/paid", sample("charge_paid"))
    assert event.name == "payment.succeeded"
    d = event.data
    assert (d["source_id"], d["status"], d["amount"], d["currency"]) == (CHARGE_ID, "succeeded", 4900, "USD")
    assert d["paid_at"] == at(2022, 4, 9, 4, 0, 12) and "next_retry_at" not in d


def test_refunded_charge_refunds_the_order_it_paid_for():
    event = only("charge/refunded", sample("charge_refunded"))
    assert event.name == "order.refunded"
    assert event.data.items() >= {"order_source_id": "4512345678901", "amount": 4900, "currency": "USD"}.items()


def test_a_queued_prepaid_order_is_placed_once_it_is_processed():
    """A prepaid charge makes its later orders at once, `queued` until each is processed;
    check status == SUCCESS on order/created or order/processed
    (https://docs.getrecharge.com/docs/submitting-an-order)."""
    queued = copy.deepcopy(sample("order_created"))
    queued["order"].update(status="queued", processed_at=None, external_order_id={"ecommerce": None})
    assert normalize("order/created", queued) == []
    processed = copy.deepcopy(sample("order_created"))
    event = only("order/processed", processed)
    assert (event.name, event.data["source_id"]) == ("order.placed", "4512345678901")


def test_order_created_names_its_subscription():
    event = only("order/created", sample("order_created"))
    assert event.name == "order.placed"
    d = event.data
    # Keyed by the Shopify order it made, which the store's orders/create names too.
    assert (d["source_id"], d["number"], d["total"], d["currency"]) == ("4512345678901", "#1042", 4900, "USD")
    assert d["is_subscription"] is True and d["subscription_source_id"] == SUB_ID
    assert d["line_items"][0].items() >= {"variant_id": "23123123123", "quantity": 1, "price": 4900}.items()
    # One made on no store yet keeps Recharge's own id.
    payload = copy.deepcopy(sample("order_created"))
    payload["order"]["external_order_id"] = {"ecommerce": None}
    assert only("order/created", payload).data["source_id"] == "441230987"


def test_every_topic_has_a_sample_normalized_above():
    covered = {"customer/created", "customer/updated", "customer/deleted", "subscription/created",
               "subscription/updated", "subscription/activated", "subscription/paused", "subscription/skipped",
               "subscription/unskipped", "subscription/swapped", "subscription/cancelled", "subscription/deleted",
               "charge/created", "charge/upcoming", "charge/paid", "charge/failed", "charge/max_retries_reached",
               "charge/refunded", "order/created", "order/processed"}
    assert set(recharge.TOPICS) - covered <= {"customer/activated", "customer/deactivated"}
    for topic in ("customer/activated", "customer/deactivated"):
        assert only(topic, sample("customer")).name == "customer.upserted"


# --- one billing cycle, several attempts --------------------------------------------------

def test_failed_failed_paid_is_one_payment_keyed_by_the_charge_id(session):
    first = sample("charge_failed")
    second = copy.deepcopy(first)
    second["charge"].update(charge_attempts=2, retry_date="2022-04-15T04:00:00+00:00",
                            updated_at="2022-04-12T04:00:10+00:00")
    paid = copy.deepcopy(sample("charge_paid"))
    paid["charge"].update(charge_attempts=3, processed_at="2022-04-15T04:00:12+00:00",
                          updated_at="2022-04-15T04:00:12+00:00")
    for topic, payload in (("charge/failed", first), ("charge/failed", second), ("charge/paid", paid)):
        apply_event(session, only(topic, payload))
        session.flush()
    payments = session.scalars(select(Payment).where(Payment.source == "recharge")).all()
    assert [(p.source_id, p.status, p.attempt_count, p.next_retry_at) for p in payments] == [
        (CHARGE_ID, "succeeded", 3, None)]
    assert payments[0].first_failed_at == at(2022, 4, 9, 4, 0, 11)
    subscriber = session.get(Subscriber, payments[0].subscriber_id)
    assert (subscriber.recharge_customer_id, subscriber.email) == (CUSTOMER_ID, "niels.bohr@example.com")
    assert subscriber.lifetime_spend == 4900


# --- end to end -----------------------------------------------------------------------------

def test_a_signed_recharge_webhook_is_stored_drained_and_shown_on_the_subscriber(client, hub):
    customer = copy.deepcopy(sample("customer"))
    subscription = copy.deepcopy(sample("subscription"))
    subscription["subscription"]["customer_id"] = customer["customer"]["id"]
    assert post(client, "recharge", customer, topic="customer/created").status_code == 200
    assert post(client, "recharge", subscription, topic="subscription/created").status_code == 200
    assert post(client, "recharge", subscription, topic="subscription/created").status_code == 200  # a retry
    forged = client.post("/webhooks/recharge", data=json.dumps(customer).encode(),
                         headers={"X-Recharge-Hmac-Sha256": "0" * 64, "X-Recharge-Topic": "customer/created"})
    assert forged.status_code == 401
    drain_inbox(hub.storage, hub.settings)
    answer = client.get(f"/api/subscribers/{customer['customer']['email']}", headers=API_HEADERS)
    found = answer.get_json()["subscriber"]
    assert found["recharge_customer_id"] == str(customer["customer"]["id"])
    [held] = found["subscriptions"]
    assert (held["source"], held["status"]) == ("recharge", "active")
    assert held["plan"].startswith("Test product")


def test_a_delivery_without_its_topic_fails_on_the_failed_events_page_instead_of_applying(app, client, hub):
    customer = copy.deepcopy(sample("customer"))
    assert post(client, "recharge", customer, topic="customer/created").status_code == 200
    deleted = copy.deepcopy(customer)
    deleted["customer"]["updated_at"] = "2030-01-01T00:00:00"
    assert post(client, "recharge", deleted, topic=None).status_code == 200  # stored: Recharge stops retrying
    drain_inbox(hub.storage, hub.settings)
    with hub.storage.session() as s:
        rows = {row.status: row for row in s.scalars(select(InboxEvent))}
        assert set(rows) == {"processed", "failed"}
        assert "type" in rows["failed"].error
        failed_id = rows["failed"].id
    add_staff(hub, "olive@shop.test", "operator")
    staff = app.test_client()
    assert log_in(staff, "olive@shop.test").status_code == 302
    page = staff.get("/sync-log/failed-events").get_data(as_text=True)
    assert f"/sync-log/events/{failed_id}" in page and "names no id or type" in page
    assert "it sends them in the X-Recharge-Topic header" in page  # what support can ask Recharge about


def test_a_partial_refund_from_recharge_and_shopify_drained_in_one_batch_subtracts_once(client, hub):
    email, order_id = "niels.bohr@example.com", 4512345678901
    charge = sample("charge_refunded")["charge"]
    paid = {**charge, "status": "success", "total_refunds": "0.00", "updated_at": "2022-04-09T04:00:12+00:00"}
    refunded = {**charge, "status": "partially_refunded", "total_refunds": "10.00"}
    order = {**load_sample("shopify/orders_paid.json"), "id": order_id, "total_price": "49.00", "currency": "USD",
             "email": email, "customer": {"id": int(SHOPIFY_ID), "email": email}}
    refund = {**load_sample("shopify/refunds_create.json"), "id": 99, "order_id": order_id,
              "transactions": [{"kind": "refund", "status": "success", "amount": "10.00", "currency": "USD"}]}
    post(client, "recharge", {"charge": paid}, topic="charge/paid")
    post(client, "shopify", order, topic="orders/paid", webhook_id="wh-paid")
    post(client, "recharge", {"charge": refunded}, topic="charge/refunded")
    post(client, "shopify", refund, topic="refunds/create", webhook_id="wh-refund")
    drain_inbox(hub.storage, hub.settings)
    with hub.storage.session() as s:
        assert s.scalar(select(Subscriber.lifetime_spend).where(Subscriber.email == email)) == 4900 - 1000
