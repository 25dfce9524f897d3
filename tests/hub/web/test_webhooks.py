"""POST /webhooks/<source>: 401 on a bad signature, 200 only after a durable write."""
from __future__ import annotations

import json
import logging
import time

from sqlalchemy import func, select

from hub.models import InboxEvent
from tests.samples import load_sample, post, sign_stripe, signed, stripe_event


def subscription_event(event_id="evt_sub_1", created=None):
    obj = load_sample("shared:stripe/pay/subscription.created.json")["object"]
    return stripe_event("customer.subscription.created", obj, event_id=event_id, created=created)


def inbox_rows(hub):
    with hub.storage.session() as s:
        return list(s.scalars(select(InboxEvent).order_by(InboxEvent.id)))


def test_signed_stripe_webhook_is_stored_with_its_raw_body(client, hub):
    event = subscription_event()
    headers, body = signed("stripe", event)
    response = client.post("/webhooks/stripe", data=body, headers=headers)
    assert response.status_code == 200
    [row] = inbox_rows(hub)
    assert (row.source, row.event_id, row.topic, row.status) == ("stripe", "evt_sub_1",
                                                                   "customer.subscription.created", "pending")
    assert row.body == body


def test_bad_signature_is_refused_and_logged_without_the_body(client, hub, caplog):
    body = json.dumps(subscription_event()).encode()
    headers = sign_stripe(body, "whsec_someone_else")
    with caplog.at_level(logging.WARNING):
        response = client.post("/webhooks/stripe", data=body, headers=headers)
    assert response.status_code == 401
    assert inbox_rows(hub) == []
    assert "rejected stripe webhook" in caplog.text
    assert "sub_00000000000000" not in caplog.text


def test_missing_signature_is_refused(client, hub):
    response = client.post("/webhooks/stripe", data=b"{}", headers={"Content-Type": "application/json"})
    assert response.status_code == 401


def test_replayed_old_stripe_signature_is_refused(client, hub):
    headers, body = signed("stripe", subscription_event(), timestamp=int(time.time()) - 301)
    assert client.post("/webhooks/stripe", data=body, headers=headers).status_code == 401


def test_body_over_two_megabytes_is_413(client, hub):
    big = {"id": "evt_big", "type": "customer.updated", "padding": "x" * (2 * 1024 * 1024)}
    response = post(client, "stripe", big)
    assert response.status_code == 413
    assert inbox_rows(hub) == []


def test_duplicate_delivery_answers_200_without_a_second_row(client, hub):
    event = subscription_event()
    assert post(client, "stripe", event).status_code == 200
    again = post(client, "stripe", event)
    assert again.status_code == 200
    assert again.get_json()["duplicate"] is True
    assert len(inbox_rows(hub)) == 1


def test_unknown_source_is_404(client, hub):
    assert client.post("/webhooks/paypal", data=b"{}").status_code == 404


def test_storage_failure_answers_503_so_the_platform_retries(client, hub):
    with hub.storage.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE inbox_event RENAME TO inbox_event_away")
    try:
        assert post(client, "stripe", subscription_event()).status_code == 503
    finally:
        with hub.storage.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE inbox_event_away RENAME TO inbox_event")


def test_a_drain_job_is_enqueued_once_for_many_webhooks(client, hub):
    for n in range(5):
        post(client, "stripe", subscription_event(event_id=f"evt_{n}"))
    assert hub.queues.queue("inbox").count == 1
    with hub.storage.session() as s:
        assert s.scalar(select(func.count()).select_from(InboxEvent)) == 5


def test_with_debounce_a_burst_enqueues_one_drain_within_moments(client, hub):
    hub.settings.HUB_DRAIN_DEBOUNCE_MS = 10
    for n in range(20):
        post(client, "stripe", subscription_event(event_id=f"evt_burst_{n}"))
    deadline = time.time() + 10  # a busy machine may hold the requester's thread a while
    while hub.queues.queue("inbox").count == 0 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert hub.queues.queue("inbox").count == 1
