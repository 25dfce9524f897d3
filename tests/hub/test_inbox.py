"""Draining the inbox: batches, ordering, duplicates, failures that block nothing."""
from __future__ import annotations

from rq import SimpleWorker
from sqlalchemy import func, select

from hub.inbox import drain_inbox
from hub.models import InboxEvent, Subscriber, Subscription
from tests.samples import API_HEADERS, load_sample, post, stripe_event


def sub_obj():
    return load_sample("shared:stripe/pay/subscription.created.json")["object"]


def customer_event(event_id="evt_cus", email="Jenny.Rosen@Example.com ", created=1_700_000_000,
                   customer_id="cus_00000000000000"):
    customer = {"id": customer_id, "object": "customer", "email": email, "name": "Jenny Rosen",
                "created": 1_600_000_000, "phone": None}
    return stripe_event("customer.created", customer, event_id=event_id, created=created)


def work(hub):
    """Run the queued jobs like a worker would, then stop."""
    queues = [hub.queues.queue(n) for n in ("inbox", "outbox", "default")]
    SimpleWorker(queues, connection=hub.queues.connection).work(burst=True)


def test_subscription_posted_appears_in_the_api_by_email(client, hub):
    post(client, "stripe", customer_event())
    post(client, "stripe", stripe_event("customer.subscription.created", sub_obj(), event_id="evt_sub",
                                        created=1_700_000_100))
    work(hub)
    response = client.get("/api/subscribers/jenny.rosen@example.com", headers=API_HEADERS)
    assert response.status_code == 200
    body = response.get_json()
    assert body["subscriber"]["email"] == "jenny.rosen@example.com"
    [subscription] = body["subscriber"]["subscriptions"]
    assert subscription["source_id"] == "sub_00000000000000"
    assert subscription["status"] == "active"
    assert subscription["amount"] == 600 and subscription["currency"] == "USD"
    assert [e["topic"] for e in body["timeline"] if e["kind"] == "event"] == [
        "customer.subscription.created", "customer.created"]


def test_same_event_twice_gives_one_row_and_one_subscription(client, hub):
    event = stripe_event("customer.subscription.created", sub_obj(), event_id="evt_twice")
    post(client, "stripe", event)
    post(client, "stripe", event)
    work(hub)
    with hub.storage.session() as s:
        assert s.scalar(select(func.count()).select_from(InboxEvent)) == 1
        assert s.scalar(select(func.count()).select_from(Subscription)) == 1


def test_deleted_before_created_ends_canceled(client, hub):
    deleted = load_sample("shared:stripe/pay/subscription.deleted.json")["object"]
    deleted["id"] = sub_obj()["id"]
    post(client, "stripe", stripe_event("customer.subscription.deleted", deleted, event_id="evt_del",
                                        created=1_700_000_500))
    work(hub)
    post(client, "stripe", stripe_event("customer.subscription.created", sub_obj(), event_id="evt_new",
                                        created=1_700_000_100))
    work(hub)
    with hub.storage.session() as s:
        [subscription] = s.scalars(select(Subscription)).all()
        assert subscription.status == "canceled"
        created_row = s.scalar(select(InboxEvent).where(InboxEvent.event_id == "evt_new"))
        assert created_row.status == "processed"
        assert created_row.outcome[0]["stale"] is True


def test_unknown_topic_is_stored_as_ignored(client, hub):
    post(client, "stripe", stripe_event("balance.available", {"object": "balance"}, event_id="evt_bal"))
    work(hub)
    with hub.storage.session() as s:
        row = s.scalar(select(InboxEvent))
        assert row.status == "ignored"
        assert "no handler" in row.error


def test_malformed_payload_is_failed_and_does_not_block_the_others(client, hub):
    broken = stripe_event("customer.subscription.created", {}, event_id="evt_broken")
    broken["data"]["object"] = "not a subscription"
    post(client, "stripe", broken)
    post(client, "stripe", b"{not json at all")
    post(client, "stripe", customer_event(event_id="evt_ok"))
    work(hub)
    with hub.storage.session() as s:
        rows = {r.event_id: r for r in s.scalars(select(InboxEvent))}
        assert rows["evt_broken"].status == "failed"
        assert rows["evt_broken"].error
        assert rows["evt_broken"].processed_at is not None
        assert rows["evt_ok"].status == "processed"
        [unreadable] = [r for r in rows.values() if r.event_id.startswith("sha256:")]
        assert unreadable.status == "failed" and "not JSON" in unreadable.error
        assert s.scalar(select(func.count()).select_from(Subscriber)) == 1


def test_drain_works_in_batches(client, hub):
    for n in range(7):
        post(client, "stripe", customer_event(event_id=f"evt_{n}", email=f"p{n}@example.com", customer_id=f"cus_{n}"))
    counts = drain_inbox(hub.storage, hub.settings, batch_size=3)
    assert counts["processed"] == 7
    with hub.storage.session() as s:
        assert s.scalar(select(func.count()).select_from(Subscriber)) == 7


def test_a_linked_source_id_wins_over_a_changed_email(client, hub):
    post(client, "stripe", customer_event(event_id="evt_a", email="old@example.com"))
    post(client, "stripe", customer_event(event_id="evt_b", email="new@example.com", created=1_700_000_900))
    work(hub)
    with hub.storage.session() as s:
        [subscriber] = s.scalars(select(Subscriber)).all()
        assert subscriber.email == "new@example.com"


def test_same_email_from_two_sources_is_one_subscriber(client, hub):
    post(client, "stripe", customer_event(email="Same@Example.com"))
    shopify_customer = {"id": 207119551, "email": "same@example.com", "first_name": "Jenny",
                        "last_name": "Rosen", "updated_at": "2026-11-01T10:00:00-05:00",
                        "created_at": "2026-01-01T10:00:00-05:00", "phone": None}
    post(client, "shopify", shopify_customer, topic="customers/update")
    work(hub)
    with hub.storage.session() as s:
        [subscriber] = s.scalars(select(Subscriber)).all()
        assert subscriber.stripe_customer_id == "cus_00000000000000"
        assert subscriber.shopify_customer_id == "207119551"


def test_api_needs_the_token_and_says_404_for_strangers(client, hub):
    assert client.get("/api/subscribers/nobody@example.com").status_code == 401
    assert client.get("/api/subscribers/nobody@example.com",
                      headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/subscribers/nobody@example.com", headers=API_HEADERS).status_code == 404
