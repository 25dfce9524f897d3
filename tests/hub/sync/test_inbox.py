"""Draining the inbox: batches, ordering, duplicates, failures that block nothing."""
from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from sqlalchemy import event, func, select, update

from hub import jobs
from hub.db.unit import UnitOfWork
from hub.models import InboxEvent, Subscriber, Subscription
from hub.sync.inbox import MAX_WAITING_TRIES, drain_inbox, reopen_waiting, retry_wait
from standins.stripe import FakeStripe
from tests.hub.web.conftest import add_staff, log_in
from tests.samples import API_HEADERS, load_sample, post, stripe_chargeback, stripe_event
from webhooks import Envelope


def sub_obj():
    return load_sample("shared:stripe/pay/subscription.created.json")["object"]


def customer_event(event_id="evt_cus", email="Jenny.Rosen@Example.com ", created=1_700_000_000,
                   customer_id="cus_00000000000000"):
    customer = {"id": customer_id, "object": "customer", "email": email, "name": "Jenny Rosen",
                "created": 1_600_000_000, "phone": None}
    return stripe_event("customer.created", customer, event_id=event_id, created=created)


def work(hub):
    """Run the queued jobs like a worker would, then stop. The hub's own worker class: RQ's
    waits up to a minute to stop when its command channel's subscription is not yet live."""
    queues = [hub.queues.queue(n) for n in ("inbox", "outbox", "default")]
    jobs.Worker(queues, connection=hub.queues.connection).work(burst=True)


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


def _klaviyo_on(hub):
    """Klaviyo counts as configured: profile deliveries are planned for it (nothing is pushed here)."""
    hub.settings.KLAVIYO_API_KEY = "pk_test_inbox"
    hub.settings.KLAVIYO_BASE_URL = "http://127.0.0.1:9"


def test_a_row_the_database_refuses_fails_alone_and_the_rest_of_its_batch_goes_through(client, hub):
    from hub.models import Delivery

    _klaviyo_on(hub)
    post(client, "stripe", customer_event(event_id="evt_a", email="a@example.com", customer_id="cus_a"))
    absurd = sub_obj()
    absurd.update(customer="cus_a", id="sub_absurd")
    absurd["items"]["data"][0]["quantity"] = 10 ** 20  # no integer column holds this
    post(client, "stripe", stripe_event("customer.subscription.created", absurd, event_id="evt_bad",
                                        created=1_700_000_100))
    post(client, "stripe", customer_event(event_id="evt_b", email="b@example.com", customer_id="cus_b"))
    counts = drain_inbox(hub.storage, hub.settings, batch_size=10)
    assert counts == {"processed": 2, "ignored": 0, "failed": 1}
    with hub.storage.session() as s:
        rows = {r.event_id: r for r in s.scalars(select(InboxEvent))}
        assert rows["evt_bad"].status == "failed" and rows["evt_bad"].error
        assert rows["evt_a"].status == rows["evt_b"].status == "processed"
        # Each row was tried once, whatever the batch went through to isolate the bad one.
        assert {r.attempts for r in rows.values()} == {1}
        assert "new subscriber" in rows["evt_a"].outcome[0]["notes"]
        assert s.scalar(select(func.count()).select_from(Subscription)) == 0
        people = {p.email: p for p in s.scalars(select(Subscriber))}
        assert set(people) == {"a@example.com", "b@example.com"}
        profiles = s.execute(select(Delivery.subscriber_id).where(Delivery.kind == "profile")).scalars().all()
        assert sorted(profiles) == sorted(p.id for p in people.values())


def test_two_events_of_one_person_in_a_batch_give_one_profile_update_with_the_newest_state(client, hub):
    from hub.models import Delivery

    _klaviyo_on(hub)
    post(client, "stripe", customer_event(event_id="evt_1", email="jo@example.com", customer_id="cus_jo"))
    renamed = {"id": "cus_jo", "object": "customer", "email": "jo@example.com", "name": "Jo Married",
               "created": 1_600_000_000, "phone": None}
    post(client, "stripe", stripe_event("customer.updated", renamed, event_id="evt_2", created=1_700_000_500))
    assert drain_inbox(hub.storage, hub.settings)["processed"] == 2
    with hub.storage.session() as s:
        [person] = s.scalars(select(Subscriber)).all()
        [delivery] = s.scalars(select(Delivery).where(Delivery.kind == "profile")).all()
        assert delivery.subscriber_id == person.id and delivery.connector == "klaviyo"
        assert (delivery.payload["first_name"], delivery.payload["last_name"]) == ("Jo", "Married")
        rows = {r.event_id: r for r in s.scalars(select(InboxEvent))}
        assert "new subscriber" in rows["evt_1"].outcome[0]["notes"]
        assert "new subscriber" not in rows["evt_2"].outcome[0]["notes"]


def test_a_new_email_taken_in_the_same_batch_links_instead_of_creating_twice(client, hub):
    # Two people at first; in one batch the first takes a new address that a third
    # customer id then arrives with: the address belongs to the first person, once.
    post(client, "stripe", customer_event(event_id="evt_1", email="one@example.com", customer_id="cus_1"))
    work(hub)
    post(client, "stripe", customer_event(event_id="evt_2", email="shared@example.com", customer_id="cus_1",
                                          created=1_700_000_100))
    post(client, "stripe", customer_event(event_id="evt_3", email="shared@example.com", customer_id="cus_3",
                                          created=1_700_000_200))
    assert drain_inbox(hub.storage, hub.settings)["processed"] == 2
    with hub.storage.session() as s:
        [person] = s.scalars(select(Subscriber)).all()
        assert person.email == "shared@example.com" and person.stripe_customer_id == "cus_1"


def test_a_batch_of_strangers_each_gets_their_own_record_and_profile(client, hub):
    from hub.models import Delivery

    _klaviyo_on(hub)
    for n in range(30):
        post(client, "stripe", customer_event(event_id=f"evt_{n}", email=f"p{n}@example.com", customer_id=f"cus_{n}"))
    assert drain_inbox(hub.storage, hub.settings, batch_size=12)["processed"] == 30
    with hub.storage.session() as s:
        people = s.execute(select(Subscriber.stripe_customer_id, Subscriber.email)).all()
        assert sorted(people) == sorted((f"cus_{n}", f"p{n}@example.com") for n in range(30))
        payloads = s.scalars(select(Delivery.payload).where(Delivery.kind == "profile")).all()
        assert sorted(p["email"] for p in payloads) == sorted(f"p{n}@example.com" for n in range(30))
        # The rules ran for each of them: every profile carries the stage they decided.
        [stage] = {p["fields"].get("stage") for p in payloads}
        assert stage is not None


def test_new_peoples_profiles_are_planned_without_a_look_for_earlier_ones_and_their_next_finds_it(client, hub):
    from hub.models import Delivery

    _klaviyo_on(hub)
    looks = []

    def _look(conn, cursor, statement, parameters, context, executemany):
        if "max(delivery.id)" in statement:
            looks.append(statement)

    event.listen(hub.storage.engine, "before_cursor_execute", _look)
    try:
        for n in range(3):
            post(client, "stripe", customer_event(event_id=f"evt_{n}", email=f"p{n}@example.com",
                                                  customer_id=f"cus_{n}"))
        assert drain_inbox(hub.storage, hub.settings)["processed"] == 3
        # Nobody can have a profile delivery before the transaction that created them.
        assert looks == []
        renamed = {"id": "cus_1", "object": "customer", "email": "p1@example.com", "name": "Pat Renamed",
                   "created": 1_600_000_000, "phone": None}
        post(client, "stripe", stripe_event("customer.updated", renamed, event_id="evt_renamed",
                                            created=1_700_000_500))
        assert drain_inbox(hub.storage, hub.settings)["processed"] == 1
        assert len(looks) == 1
    finally:
        event.remove(hub.storage.engine, "before_cursor_execute", _look)
    with hub.storage.session() as s:
        person = s.scalar(select(Subscriber).where(Subscriber.stripe_customer_id == "cus_1"))
        first, second = s.scalars(select(Delivery).where(Delivery.subscriber_id == person.id)
                                  .order_by(Delivery.id)).all()
        # The change is sent, and its key names the profile planned before it.
        assert second.payload["last_name"] == "Renamed"
        assert second.idempotency_key.endswith(f":{first.id}")


def test_a_drain_job_does_not_wait_for_a_fuller_batch_when_nothing_more_arrives(client, hub):
    from hub.sync.inbox import await_fuller_batch

    for n in range(3):
        post(client, "stripe", customer_event(event_id=f"evt_{n}", email=f"p{n}@example.com", customer_id=f"cus_{n}"))
    assert await_fuller_batch(hub.storage, size=2, linger_s=30) == 2  # a full batch is there: go
    assert await_fuller_batch(hub.storage, size=10, linger_s=30) == 3  # nothing new came: go
    assert drain_inbox(hub.storage, hub.settings, linger_s=30)["processed"] == 3


def test_a_drain_job_waits_for_the_webhooks_still_arriving_and_counts_each_once(client, hub, monkeypatch):
    from hub.sync import inbox

    for n in range(3):
        post(client, "stripe", customer_event(event_id=f"evt_{n}", email=f"p{n}@example.com", customer_id=f"cus_{n}"))
    arriving, steps = iter([(3, 4), (5, 6), (7, 8, 9)]), []  # stored during each step of the wait

    def a_step_of_the_wait(seconds):
        steps.append(seconds)
        for n in next(arriving, ()):
            body = json.dumps(customer_event(event_id=f"evt_{n}", email=f"p{n}@example.com",
                                             customer_id=f"cus_{n}")).encode()
            hub.storage.inbox_writer.write("stripe", Envelope(f"evt_{n}", "customer.created"), {}, body)

    monkeypatch.setattr(inbox, "time", SimpleNamespace(monotonic=time.monotonic, sleep=a_step_of_the_wait))
    assert inbox.await_fuller_batch(hub.storage, size=10, linger_s=30) == 10
    assert len(steps) == 3  # it went once the batch was full
    monkeypatch.undo()
    assert drain_inbox(hub.storage, hub.settings, linger_s=30)["processed"] == 10


def test_a_drain_behind_a_backlog_claims_batch_after_batch_without_looking_for_fuller_ones(client, hub, monkeypatch):
    from hub.sync import inbox

    for n in range(12):
        post(client, "stripe", customer_event(event_id=f"evt_{n}", email=f"p{n}@example.com", customer_id=f"cus_{n}"))
    looks = []
    look = inbox.await_fuller_batch
    monkeypatch.setattr(inbox, "await_fuller_batch", lambda *a: looks.append(look(*a)) or looks[-1])
    assert drain_inbox(hub.storage, hub.settings, batch_size=5, linger_s=30)["processed"] == 12
    # One look before the first batch of 5, none after it or the second, one after the last 2.
    assert looks == [5, 0]


def test_a_webhook_stored_while_a_batch_is_drained_leaves_the_batch_whole(client, hub, caplog):
    """The drain's batch and the webhooks write the inbox at the same time: the batch still
    commits in one go (no "database is locked", no row-by-row redo) and the newcomer waits."""
    from hub.sync.inbox import after_batch, claim_batch, lock_model, process_batch

    _klaviyo_on(hub)
    for n in range(3):
        post(client, "stripe", customer_event(event_id=f"evt_{n}", email=f"p{n}@example.com", customer_id=f"cus_{n}"))
    with hub.storage.session() as session:
        rows = claim_batch(session, 10)
        lock_model(session)
        late = post(client, "stripe", customer_event(event_id="evt_late", email="late@example.com",
                                                      customer_id="cus_late"))
        assert late.status_code == 200  # answered while the batch holds the model's write lock
        unit = UnitOfWork(session)
        after_batch(unit, hub.settings, process_batch(unit, rows, hub.settings))
    assert "row by row" not in caplog.text
    with hub.storage.session() as s:
        statuses = dict(s.execute(select(InboxEvent.event_id, InboxEvent.status)).all())
    assert statuses == {"evt_0": "processed", "evt_1": "processed", "evt_2": "processed", "evt_late": "pending"}
    assert drain_inbox(hub.storage, hub.settings)["processed"] == 1


def test_each_drained_batch_asks_for_its_pushes_at_once(client, hub):
    """Under a steady stream the inbox is never empty: pushes must not wait for the drain's end."""
    _klaviyo_on(hub)
    for n in range(5):
        post(client, "stripe", customer_event(event_id=f"evt_{n}", email=f"p{n}@example.com", customer_id=f"cus_{n}"))
    asked = []
    drain_inbox(hub.storage, hub.settings, batch_size=2, on_batch=asked.append)
    assert asked == [{"klaviyo"}, {"klaviyo"}, {"klaviyo"}]


def test_a_drain_job_finding_another_drainer_frees_its_worker_and_looks_again_later(client, hub):
    from hub import jobs
    from hub.context import use_hub
    from hub.errors import DrainerBusy

    if not hub.settings.DATABASE_URL.startswith("sqlite"):
        pytest.skip("PostgreSQL drainers run side by side (FOR UPDATE SKIP LOCKED)")
    post(client, "stripe", customer_event())
    use_hub(hub)
    with hub.storage.drain_lock():  # another worker is draining (the lock is held per thread)
        assert in_thread(jobs.drain_inbox_job) == {"busy": 1}
        with pytest.raises(DrainerBusy):
            in_thread(lambda: drain_inbox(hub.storage, hub.settings, wait=False))
    assert hub.queues.queue("inbox").scheduled_job_registry.count == 1  # the look a second later
    assert drain_inbox(hub.storage, hub.settings)["processed"] == 1


def in_thread(fn):
    """fn's answer, run in another thread; what it raised is raised here."""
    outcome = {}

    def target():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed back to the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=10)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]



def test_on_postgresql_each_drained_batch_is_planned_for_its_values(client, hub, database_url):
    """A full batch repeats its lookups' text: a generic plan kept from a smaller table would
    scan it testing every row against each name (hub.db.dialect.plan_for_values)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite plans every statement for its values")
    for n in range(3):
        post(client, "stripe", customer_event(f"evt_cus_{n}", f"buyer{n}@example.com", customer_id=f"cus_{n:04d}"))
    modes = []

    @event.listens_for(hub.storage.engine, "after_cursor_execute")
    def _seen(conn, cursor, statement, *args):
        if "FROM subscriber" in statement and "= ANY (" in statement:  # the batch's identity lookup
            modes.append(conn.exec_driver_sql("SHOW plan_cache_mode").scalar())

    try:
        drain_inbox(hub.storage, hub.settings, batch_size=3)
    finally:
        event.remove(hub.storage.engine, "after_cursor_execute", _seen)
    assert modes and set(modes) == {"force_custom_plan"}


def burst_analyzed_then_processed(hub) -> None:
    """An inbox whose statistics were taken at a burst's start: 1,000 rows pending when
    analyzed, processed since, then 9,000 more of which the last 300 are pending."""
    row = {"source": "stripe", "topic": "customer.created", "headers": {}, "body": b"{}",
           "received_at": datetime(2026, 12, 7, tzinfo=timezone.utc), "attempts": 0,
           "outcome": [], "origin": "webhook"}
    table = InboxEvent.__table__
    with hub.storage.engine.begin() as conn:
        conn.execute(table.insert(), [dict(row, event_id=f"evt_{n}", status="pending") for n in range(1000)])
    with hub.storage.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE inbox_event")
    with hub.storage.engine.begin() as conn:
        conn.execute(update(InboxEvent).values(status="processed"))
        conn.execute(table.insert(), [dict(row, event_id=f"evt_{n}", status="processed" if n < 9700 else "pending")
                                      for n in range(1000, 10000)])


@contextmanager
def inbox_reads(hub):
    """The statements that read the inbox meanwhile, with their parameters."""
    looks = []

    @event.listens_for(hub.storage.engine, "before_cursor_execute")
    def _look(conn, cursor, statement, parameters, *args):
        if "FROM inbox_event" in statement:
            looks.append((statement, parameters))

    try:
        yield looks
    finally:
        event.remove(hub.storage.engine, "before_cursor_execute", _look)


def assert_through_the_open_index(hub, looks) -> None:
    for statement, parameters in looks:
        with hub.storage.engine.connect() as conn:
            plan = "\n".join(conn.exec_driver_sql("EXPLAIN " + statement, parameters).scalars())
        assert "ix_inbox_event_open" in plan, plan
        assert "Seq Scan on inbox_event" not in plan and "pk_inbox_event" not in plan, plan


def test_the_drain_reads_the_pending_rows_alone_after_a_burst_was_analyzed(hub, database_url):
    """PostgreSQL analyzes a table on its own when it has grown: at a burst's start most of
    the inbox is pending, and once those rows are processed the statistics still say so. The
    first pending rows then seem quickest to find by walking the table, or its primary key,
    past every row processed since: at each batch, and at each look for a fuller one (every
    20 ms while a burst lasts)."""
    from hub.sync.inbox import await_fuller_batch, claim_batch

    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's statistics mislead its planner here; SQLite's are never taken")
    burst_analyzed_then_processed(hub)
    with inbox_reads(hub) as looks:
        assert await_fuller_batch(hub.storage, size=500, linger_s=0) == 300
        with hub.storage.session() as session:
            assert len(claim_batch(session, 500)) == 300
    assert len(looks) == 2
    assert_through_the_open_index(hub, looks)


def test_every_count_of_open_rows_reads_their_index_after_a_burst_was_analyzed(client, hub, database_url):
    """/healthz (a load balancer's, every few seconds), /metrics (every scrape), the failed
    events page and the failed-events alert count the open rows: with a burst's statistics the
    whole table looked cheaper to count, and was read each time."""
    from hub.ops import alerts, metrics, synclog

    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's statistics mislead its planner here; SQLite's are never taken")
    burst_analyzed_then_processed(hub)
    hub.settings.HUB_STUCK_PENDING_SECONDS = 60
    with hub.storage.engine.begin() as conn:  # a failed row, so the waiting ones are counted too
        conn.execute(update(InboxEvent).where(InboxEvent.event_id == "evt_9999").values(status="failed"))
    with inbox_reads(hub) as looks:
        checks = client.get("/healthz").get_json()
        scraped = metrics.render(hub)
        with hub.storage.session() as session:
            counts = synclog.open_event_counts(session)
            alerts.failed_events(session, hub.settings)
    assert (checks["inbox_backlog"], checks["inbox_failed"], checks["inbox_stuck"]) == (299, 1, 299)
    assert 'hub_inbox_open_events{source="stripe",status="pending"} 299.0' in scraped
    assert counts == {"pending": 299, "failed": 1, "waiting": 0}
    assert len(looks) >= 6
    assert_through_the_open_index(hub, looks)


def test_two_drainers_on_postgresql_process_each_row_once_and_each_person_in_order(client, hub, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("one drainer at a time on SQLite (Storage.drain_lock)")
    people, invoices = 24, 6
    for n in range(people):
        post(client, "stripe", customer_event(f"evt_cus_{n}", f"buyer{n}@example.com", customer_id=f"cus_{n:04d}"))
    drain_inbox(hub.storage, hub.settings)
    for step in range(invoices):
        for n in range(people):
            invoice = {"id": f"in_{n}_{step}", "object": "invoice", "customer": f"cus_{n:04d}",
                       "customer_email": f"buyer{n}@example.com", "amount_paid": 100 * (step + 1),
                       "currency": "usd", "status": "paid"}
            post(client, "stripe", stripe_event("invoice.paid", invoice, event_id=f"evt_{n}_{step}",
                                                created=1_700_000_000 + step))
    # Two drainers side by side, in batches that each name most people.
    threads = [threading.Thread(target=drain_inbox, args=(hub.storage, hub.settings),
                                kwargs={"batch_size": 20}) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with hub.storage.session() as s:
        rows = s.execute(select(InboxEvent.status, InboxEvent.attempts, InboxEvent.processed_at,
                                InboxEvent.event_id).order_by(InboxEvent.id)).all()
        spend = dict(s.execute(select(Subscriber.email, Subscriber.lifetime_spend)).all())
    assert len(rows) == people * (invoices + 1)
    assert {(r.status, r.attempts) for r in rows} == {("processed", 1)}
    # No payment lost to another batch's write of the same person.
    assert spend == {f"buyer{n}@example.com": 100 * invoices * (invoices + 1) // 2 for n in range(people)}
    # Each person's webhooks were applied one after another, in the order they came.
    for n in range(people):
        mine = [r.processed_at for r in rows if r.event_id.startswith(f"evt_{n}_")]
        assert mine == sorted(mine)


def test_a_refund_of_an_order_paid_in_euros_takes_its_dollars_off_a_dollar_shops_spend(client, hub):
    # A USD shop; the customer paid 99.60 EUR (107.99 USD) and got it all back.
    dollars_and_euros = {"shop_money": {"amount": "107.99", "currency_code": "USD"},
                         "presentment_money": {"amount": "99.60", "currency_code": "EUR"}}
    order = {**load_sample("shopify/orders_paid.json"), "currency": "USD", "presentment_currency": "EUR",
             "total_price": "107.99", "total_price_set": dollars_and_euros}
    refund = {**load_sample("shopify/multicurrency/refunds_create.json"), "order_id": order["id"]}
    post(client, "shopify", order, topic="orders/paid", webhook_id="wh-paid")
    work(hub)
    spend = client.get("/api/subscribers/john@example.com", headers=API_HEADERS).get_json()["subscriber"]
    assert spend["lifetime_spend"]["amount"] == 10799
    post(client, "shopify", refund, topic="refunds/create", webhook_id="wh-refund")
    work(hub)
    spend = client.get("/api/subscribers/john@example.com", headers=API_HEADERS).get_json()["subscriber"]
    assert spend["lifetime_spend"]["amount"] == 0


# --- a platform that does not answer what an event needs from it ---------------------------

def waiting_chargeback(client, hub, api, attempts: int = 0) -> None:
    """A chargeback's webhook drained while Stripe does not answer for its charge (after
    `attempts` earlier tries)."""
    api.fail(503, path="/v1/charges/")
    hub.settings = replace(hub.settings, STRIPE_API_KEY="sk_test_wait", STRIPE_API_BASE=api.url)
    _, _, dispute = stripe_chargeback("cus_wait", int(time.time()) - 3600)
    post(client, "stripe", stripe_event("charge.dispute.funds_withdrawn", dispute, event_id="evt_chargeback"))
    with hub.storage.session() as s:
        s.execute(update(InboxEvent).values(attempts=attempts))
    drain_inbox(hub.storage, hub.settings)


def test_a_chargeback_stripe_cannot_show_waits_and_counts_by_itself_once_stripe_answers(app, client, hub):
    paid, charge, dispute = stripe_chargeback("cus_wait", int(time.time()) - 3600)
    chargeback = stripe_event("charge.dispute.funds_withdrawn", dispute, event_id="evt_chargeback")
    customer = {"id": "cus_wait", "object": "customer", "email": "wanda@example.com", "name": "Wanda Wait",
                "created": 1_700_000_000, "phone": None}

    def spend() -> int:
        with hub.storage.session() as s:
            return s.scalar(select(Subscriber.lifetime_spend).where(Subscriber.stripe_customer_id == "cus_wait"))

    def chargeback_row() -> InboxEvent:
        with hub.storage.session() as s:
            return s.scalar(select(InboxEvent).where(InboxEvent.event_id == "evt_chargeback"))

    with FakeStripe(key="sk_test_wait") as api:
        api.customers, api.charges["ch_disputed"] = [customer], charge
        hub.settings = replace(hub.settings, STRIPE_API_KEY="sk_test_wait", STRIPE_API_BASE=api.url)
        post(client, "stripe", paid)
        drain_inbox(hub.storage, hub.settings)
        assert spend() == 4500

        outage = api.fail(503, path="/v1/charges/", message="Stripe is having trouble")
        post(client, "stripe", chargeback)
        drain_inbox(hub.storage, hub.settings)
        waiting = chargeback_row()
        assert spend() == 4500  # not applied without the charge, which names whose money it was
        assert waiting.status == "failed"
        assert waiting.error.startswith("Stripe did not answer GET /v1/charges/ch_disputed")
        assert timedelta(seconds=50) < waiting.retry_at - waiting.processed_at <= timedelta(minutes=1)

        add_staff(hub, "sam@shop.test")
        staff = app.test_client()
        log_in(staff, "sam@shop.test")
        listing = staff.get("/sync-log/failed-events").get_data(as_text=True)
        assert "Stripe did not answer" in listing and "by itself, " in listing
        assert "The hub tries again by itself at" in staff.get(f"/sync-log/events/{waiting.id}").get_data(as_text=True)
        assert ("1</strong> inbound events that failed (1 waiting for their platform to answer: tried again by "
                "the hub itself)") in staff.get("/sync-log/").get_data(as_text=True)

        assert jobs.backstop_job() is not None and chargeback_row().status == "failed"  # its minute is not over
        api.heal()
        assert outage.seen >= 1
        with hub.storage.session() as s:  # the minute passes
            s.execute(update(InboxEvent).where(InboxEvent.id == waiting.id).values(
                retry_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
        jobs.backstop_job()

    done = chargeback_row()
    assert spend() == 0
    assert (done.status, done.error, done.retry_at, done.attempts) == ("processed", None, None, 2)
    page = staff.get(f"/sync-log/events/{done.id}").get_data(as_text=True)
    assert "Attempt 1," in page and "failed — Stripe did not answer GET /v1/charges/ch_disputed" in page
    assert "Attempt 2," in page and "tried again by itself, processed" in page


def test_a_waiting_event_is_opened_again_only_once_its_wait_is_over(client, hub):
    with FakeStripe(key="sk_test_wait") as api:
        waiting_chargeback(client, hub, api)
        with hub.storage.session() as s:
            retry_at = s.scalar(select(InboxEvent.retry_at))
        assert reopen_waiting(hub.storage, now=retry_at - timedelta(seconds=1)) == 0
        assert reopen_waiting(hub.storage, now=retry_at) == 1
        drain_inbox(hub.storage, hub.settings)  # Stripe still does not answer: a longer wait
        with hub.storage.session() as s:
            row = s.scalar(select(InboxEvent))
        assert row.status == "failed" and row.attempts == 2
        assert abs(row.retry_at - row.processed_at - timedelta(minutes=2)) < timedelta(seconds=1)


def test_the_waits_double_up_to_an_hour_and_end_after_about_a_day():
    assert [retry_wait(n) for n in (1, 2, 3, 6, 7, 20)] == [timedelta(minutes=m) for m in (1, 2, 4, 32, 60, 60)]
    assert retry_wait(1, asked_s=300) == timedelta(minutes=5)  # a 429 that asks for longer
    assert timedelta(hours=20) < sum((retry_wait(n) for n in range(1, MAX_WAITING_TRIES)), timedelta()) \
        < timedelta(hours=30)


def test_after_its_last_try_a_waiting_event_stays_failed_for_staff_to_replay(client, hub):
    with FakeStripe(key="sk_test_wait") as api:
        waiting_chargeback(client, hub, api, attempts=MAX_WAITING_TRIES - 1)
    with hub.storage.session() as s:
        row = s.scalar(select(InboxEvent))
    assert row.status == "failed" and row.retry_at is None
    assert f"tried {MAX_WAITING_TRIES} times over about a day: replay it once stripe answers" in row.error
    assert reopen_waiting(hub.storage, now=datetime.now(timezone.utc) + timedelta(days=2)) == 0


def test_once_stripe_did_not_answer_the_batchs_other_stripe_events_wait_without_asking(client, hub):
    _, charge, dispute = stripe_chargeback("cus_wait", int(time.time()) - 3600)
    with FakeStripe(key="sk_test_wait") as api:
        api.fail(503, path="/v1/charges/")
        hub.settings = replace(hub.settings, STRIPE_API_KEY="sk_test_wait", STRIPE_API_BASE=api.url)
        for n in range(3):
            post(client, "stripe", stripe_event("charge.dispute.funds_withdrawn", {**dispute, "id": f"dp_{n}"},
                                                event_id=f"evt_chargeback{n}"))
        post(client, "stripe", customer_event())  # needs no call: applied
        drain_inbox(hub.storage, hub.settings)
        asked = {call.path for call in api.calls}
    with hub.storage.session() as s:
        rows = {r.event_id: r for r in s.scalars(select(InboxEvent))}
    assert asked == {"/v1/charges/ch_disputed"}  # the first chargeback's call, with the SDK's own tries
    assert [rows[f"evt_chargeback{n}"].status for n in range(3)] == ["failed"] * 3
    assert all(rows[f"evt_chargeback{n}"].retry_at for n in range(3))
    assert rows["evt_chargeback1"].error.startswith("not asked while stripe does not answer: Stripe did not answer")
    assert rows["evt_cus"].status == "processed"
