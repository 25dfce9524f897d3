"""The outbox on a real SQLite database: planning, coalescing, idempotency, retries and dead letters."""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import func, select, update
from sqlalchemy.orm import selectinload

from connectors import CONNECTORS
from connectors.base import Connector, Failed, RetryAfter, Sent
from connectors.ratelimit import Limiter, Rate
from hub.config import Settings
from hub.db.engine import Storage
from hub.db.unit import UnitOfWork
from hub.events import CONSENT_CHANGED, CUSTOMER_UPSERTED, CanonicalEvent
from hub.models import (
    CANCELLED,
    DEAD,
    INTERRUPTED,
    QUEUED,
    RETRYING,
    SENT,
    Base,
    Delivery,
    DeliveryAttempt,
    ProfileDue,
    Subscriber,
    Subscription,
    Trigger,
)
from hub.ops import metrics
from hub.sync import outbox
from hub.sync.apply import Changes, apply_event
from hub.web.synclog import attempt_sentences
from standins.activecampaign import FakeActiveCampaign
from standins.hubspot import FakeHubSpot
from standins.klaviyo import FakeKlaviyo
from tests.connectors.test_ratelimit import ThreeCalls

# Rows are created at the real time; pushing "an hour from now" finds them due.
NOW = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)


class Scripted(Connector):
    """A connector whose answers the test writes: `script` holds one function per push (item → Result)."""

    name = "scripted"
    max_batch = 100
    settings_keys = ()
    kinds = ("profile", "event", "consent")
    needs = ("email", "phone")
    options = {}
    script: list = []
    pushes: list = []

    def push_batch(self, items):
        Scripted.pushes.append(list(items))
        answer = Scripted.script.pop(0) if Scripted.script else (lambda item: Sent(http_status=200, latency_ms=4))
        return {item.delivery_id: answer(item) for item in items}


class Metered(ThreeCalls, Scripted):
    """The scripted tool called three times per delivery under the rate limiter."""

    name = "scripted"


@pytest.fixture
def storage(tmp_path):
    storage = Storage("sqlite:///" + str(tmp_path / "t.db"))
    Base.metadata.create_all(storage.engine)
    yield storage
    storage.dispose()


@pytest.fixture
def mappings(tmp_path):
    folder = tmp_path / "mappings"
    folder.mkdir()
    return folder


@pytest.fixture
def settings(mappings, monkeypatch):
    monkeypatch.setitem(CONNECTORS, "scripted", Scripted)
    Scripted.script, Scripted.pushes = [], []
    return Settings.from_env(env={}, overrides={"HUB_MAPPINGS_DIR": str(mappings)})


def subscriber(session, email="ada@example.com", **attrs) -> Subscriber:
    person = Subscriber(email=email, first_name="Ada", stage="new", health_score=60, loyalty_points=10,
                        tier="Bronze", lifetime_spend=2500, currency="USD", consent={}, **attrs)
    person.subscriptions.append(Subscription(source="stripe", source_id=f"sub_{email}", status="active",
                                             plan="Coffee monthly", interval="month", interval_count=1,
                                             amount=2500, currency="USD", next_renewal_at=NOW + timedelta(days=10)))
    session.add(person)
    session.flush()
    return person


def plan_profile(storage, settings) -> Subscriber:
    """Ada, new, with her profile planned for every tool as a drained batch plans it."""
    with storage.session() as session:
        unit = UnitOfWork(session)
        person = subscriber(session)
        outbox.plan(unit, settings, person, changed(person), [], event())
        outbox.flush_pending_profiles(unit, settings)
    return person


def event(name=CUSTOMER_UPSERTED, **data) -> CanonicalEvent:
    return CanonicalEvent(name=name, source="shopify", occurred_at=NOW, customer={"email": "ada@example.com"},
                          data=data)


def changed(person) -> Changes:
    return Changes(CUSTOMER_UPSERTED, subscriber=person)


def trigger(session, person, name="Renewal Reminder", rule="renewal-7d", occasion="2026-11-30", status="fired"):
    row = Trigger(subscriber_id=person.id, rule=rule, occasion=occasion, name=name, status=status,
                  properties={"days_before": 7}, due_at=NOW)
    session.add(row)
    session.flush()
    return row


def deliveries(storage, **where) -> list[Delivery]:
    with storage.session() as session:
        return list(session.scalars(select(Delivery).filter_by(**where).order_by(Delivery.id)))


def attempts(storage, delivery_id) -> list[DeliveryAttempt]:
    with storage.session() as session:
        return list(session.scalars(select(DeliveryAttempt).filter_by(delivery_id=delivery_id)
                                    .order_by(DeliveryAttempt.id)))


# Profile fields -------------------------------------------------------------------------

def test_profile_fields_come_from_the_model():
    person = Subscriber(email="a@b.c", stage="loyal", health_score=88, tier="Gold", loyalty_points=900,
                        lifetime_spend=54000, currency="USD")
    person.subscriptions = [
        Subscription(source="recharge", status="active", plan="Beans", interval="month", interval_count=1,
                     amount=2000, currency="USD", next_renewal_at=NOW + timedelta(days=20)),
        Subscription(status="past_due", plan="Grinder care", interval="year", interval_count=1, amount=12000,
                     currency="USD", next_renewal_at=NOW + timedelta(days=3)),
        Subscription(status="trialing", plan="Tea", interval="week", interval_count=2, amount=1000, currency="USD",
                     next_renewal_at=NOW + timedelta(days=1)),
        Subscription(status="canceled", plan="Old", interval="month", amount=9900, currency="USD"),
    ]
    assert outbox.profile_fields(person) == {
        "stage": "loyal", "health_score": 88, "tier": "Gold", "points": 900,
        "subscription_status": "active", "subscription_source": "recharge", "plan": "Beans",
        "mrr": 2000 + 1000,  # the yearly plan per month; trials bring no revenue yet
        "next_renewal_at": (NOW + timedelta(days=1)).isoformat(),
        "lifetime_value": 54000}


def test_profile_fields_of_someone_without_subscriptions():
    fields = outbox.profile_fields(Subscriber(email="a@b.c", lifetime_spend=0))
    cleared = (fields["subscription_status"], fields["plan"], fields["mrr"], fields["next_renewal_at"])
    assert cleared == (None, None, 0, None)


@pytest.mark.parametrize("interval, count, amount, monthly", [
    ("month", 1, 2500, 2500), ("month", 3, 6000, 2000), ("year", 1, 12000, 1000),
    ("week", 1, 1200, 5200), ("week", 4, 2000, 2167), ("day", 30, 3000, 3042), (None, 1, 500, 500)])
def test_prices_are_normalized_to_a_month(interval, count, amount, monthly):
    sub = Subscription(status="active", interval=interval, interval_count=count, amount=amount)
    assert outbox.monthly_amount(sub) == monthly


# Planning -------------------------------------------------------------------------------

def test_changes_in_one_batch_become_one_profile_update_with_the_final_values(storage, settings):
    with storage.session() as session:
        unit = UnitOfWork(session)
        person = subscriber(session)
        for stage, points in (("new", 10), ("engaged", 50), ("loyal", 90)):
            person.stage, person.loyalty_points = stage, points
            outbox.plan(unit, settings, person, changed(person), [], event())
        assert outbox.flush_pending_profiles(unit, settings) == 1
        assert outbox.planned_connectors(unit) == {"scripted"}
    [row] = deliveries(storage)
    assert (row.kind, row.connector, row.status) == ("profile", "scripted", QUEUED)
    assert row.payload["fields"]["stage"] == "loyal" and row.payload["fields"]["points"] == 90
    assert row.payload["email"] == "ada@example.com" and row.idempotency_key.startswith(f"profile:{person.id}:")


def test_an_unchanged_profile_is_not_sent_twice(storage, settings):
    person = plan_profile(storage, settings)
    for _ in range(2):  # the same webhook replayed, in later batches
        with storage.session() as session:
            unit = UnitOfWork(session)
            person = session.get(Subscriber, person.id)
            outbox.plan(unit, settings, person, changed(person), [], event())
            assert outbox.flush_pending_profiles(unit, settings) == 0
    assert len(deliveries(storage)) == 1


def test_a_profile_planned_before_the_faster_digest_is_not_sent_again_unchanged(storage, settings):
    # Keys written before profile_digest hold 16 hex digits of json.dumps's SHA-256: an
    # upgrade must not make every unchanged profile look new.
    import hashlib
    import json

    person = plan_profile(storage, settings)
    with storage.session() as session:
        [row] = session.scalars(select(Delivery)).all()
        assert row.idempotency_key.split(":")[2].startswith("o")
        old = hashlib.sha256(json.dumps(row.payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
        row.idempotency_key = f"profile:{person.id}:{old}:0"
    with storage.session() as session:
        unit = UnitOfWork(session)
        person = session.get(Subscriber, person.id)
        outbox.plan(unit, settings, person, changed(person), [], event())
        assert outbox.flush_pending_profiles(unit, settings) == 0
        person.stage = "loyal"
        outbox.plan(unit, settings, person, changed(person), [], event())
        assert outbox.flush_pending_profiles(unit, settings) == 1


def test_the_last_profile_lookup_searches_by_person_not_through_a_connector_s_queue(storage, settings):
    # Each batch looks up the last profile delivery of its people. Through the queue index
    # (all of a connector's deliveries) that lookup slows down as the table grows.
    from sqlalchemy import event as sa_event

    with storage.session() as session:
        unit = UnitOfWork(session)
        people = [subscriber(session, email=f"p{i}@example.com") for i in range(500)]  # a drained batch
        for person in people:
            outbox.plan(unit, settings, person, changed(person), [], event())
        outbox.flush_pending_profiles(unit, settings)
    seen = []

    def spy(conn, cursor, statement, parameters, context, executemany):
        if "max(delivery.id)" in statement:
            seen.append((statement, parameters))

    sa_event.listen(storage.engine, "before_cursor_execute", spy)
    with storage.session() as session:
        unit = UnitOfWork(session)
        for person in session.scalars(select(Subscriber)):
            person.stage = "loyal"
            outbox.plan(unit, settings, person, changed(person), [], event())
        assert outbox.flush_pending_profiles(unit, settings) == 500
    sa_event.remove(storage.engine, "before_cursor_execute", spy)
    [(statement, parameters)] = seen
    with storage.engine.connect() as conn:
        plan = " ".join(row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters))
    assert "ix_delivery_subscriber" in plan and "ix_delivery_queue" not in plan


def test_a_profile_back_in_an_earlier_state_is_sent_again(storage, settings):
    for stage in ("new", "at_risk", "new"):
        with storage.session() as session:
            unit = UnitOfWork(session)
            person = session.scalar(select(Subscriber)) or subscriber(session)
            person.stage = stage
            outbox.plan(unit, settings, person, changed(person), [], event())
            assert outbox.flush_pending_profiles(unit, settings) == 1
    assert [d.payload["fields"]["stage"] for d in deliveries(storage)] == ["new", "at_risk", "new"]


def test_stale_updates_and_unreachable_people_plan_nothing(storage, settings):
    with storage.session() as session:
        unit = UnitOfWork(session)
        person = subscriber(session)
        stale = changed(person)
        stale.stale = True
        outbox.plan(unit, settings, person, stale, [trigger(session, person)], event())
        nobody = Subscriber(email=None, phone=None, consent={})
        session.add(nobody)
        session.flush()
        outbox.plan(unit, settings, nobody, changed(nobody), [trigger(session, nobody)], event())
        outbox.flush_pending_profiles(unit, settings)
    assert deliveries(storage) == []


def test_a_trigger_becomes_one_event_keyed_by_the_trigger(storage, settings):
    with storage.session() as session:
        unit = UnitOfWork(session)
        person = subscriber(session)
        fired = trigger(session, person)
        skipped = trigger(session, person, occasion="2026-12-30", status="skipped")
        for _ in range(2):  # a replay plans the same trigger again
            outbox.plan(unit, settings, person, changed(person), [fired, skipped], event())
    [row] = deliveries(storage, kind="event")
    assert row.idempotency_key == f"{person.id}:renewal-7d:2026-11-30" == row.payload["unique_id"]
    assert row.trigger_id == fired.id
    assert row.payload["name"] == "Renewal Reminder" and row.payload["properties"] == {"days_before": 7}
    assert row.payload["time"] == NOW.isoformat()


def test_the_mapping_says_which_triggers_go_where_and_under_what_name(storage, settings, mappings):
    (mappings / "scripted.yaml").write_text("send: [event]\ntriggers:\n  Payment Failed: Hub Payment Failed\n")
    with storage.session() as session:
        unit = UnitOfWork(session)
        person = subscriber(session)
        triggers = [trigger(session, person), trigger(session, person, "Payment Failed", "dunning", "inv_1")]
        outbox.plan(unit, settings, person, changed(person), triggers, event())
        outbox.flush_pending_profiles(unit, settings)
    [row] = deliveries(storage)
    assert (row.kind, row.payload["name"]) == ("event", "Hub Payment Failed")


def test_consent_is_planned_only_when_the_source_changed_it_and_carries_its_time(storage, settings):
    consented_at = datetime(2026, 11, 2, 8, 15, tzinfo=timezone.utc)
    consent = event(CONSENT_CHANGED, channel="email", state="subscribed", consented_at=consented_at)
    for _ in range(2):  # the same consent webhook twice: the second changes nothing
        with storage.session() as session:
            unit = UnitOfWork(session)
            changes = apply_event(session, consent)
            outbox.plan(unit, settings, changes.subscriber, changes, [], consent)
            outbox.flush_pending_profiles(unit, settings)
    with storage.session() as session:  # a profile update says nothing about consent
        changes = apply_event(session, event())
        outbox.plan(unit, settings, changes.subscriber, changes, [], event())
    [row] = deliveries(storage, kind="consent")
    assert row.payload == {"subscriber_id": row.subscriber_id, "email": "ada@example.com", "phone": None,
                           "channel": "email", "state": "subscribed", "consented_at": consented_at.isoformat(),
                           "source": "shopify", "history": False}


def test_sms_consent_needs_a_phone(storage, settings):
    consent = event(CONSENT_CHANGED, channel="sms", state="subscribed", consented_at=NOW)
    with storage.session() as session:
        unit = UnitOfWork(session)
        changes = apply_event(session, consent)
        assert outbox.plan_consent(unit, settings, changes.subscriber, changes, consent) == 0


def test_consent_given_then_withdrawn_at_the_source_reaches_activecampaign_and_hubspot(storage, mappings):
    (mappings / "activecampaign.yaml").write_text("list_id: '1'\n")
    (mappings / "hubspot.yaml").write_text(f"subscription_id: '{FakeHubSpot.MARKETING}'\nlifecycle_stages: {{}}\n")
    given, withdrawn = NOW - timedelta(days=3), NOW - timedelta(days=1)
    with FakeActiveCampaign(api_key="ac") as ac, FakeHubSpot(token="pat") as hubspot:
        settings = Settings.from_env(env={}, overrides={
            "HUB_MAPPINGS_DIR": str(mappings), "ACTIVECAMPAIGN_URL": ac.url, "ACTIVECAMPAIGN_API_KEY": "ac",
            "HUBSPOT_ACCESS_TOKEN": "pat", "HUBSPOT_BASE_URL": hubspot.url})
        for state, at in (("subscribed", given), ("unsubscribed", withdrawn)):
            consent = event(CONSENT_CHANGED, channel="email", state=state, consented_at=at)
            with storage.session() as session:
                unit = UnitOfWork(session)
                changes = apply_event(session, consent)
                outbox.plan(unit, settings, changes.subscriber, changes, [], consent)
            for tool in ("activecampaign", "hubspot"):
                assert outbox.push_batch(storage, settings, tool, now=NOW, limiter=Limiter())["sent"] == 1
            if state == "subscribed":
                assert ac.list_status("ada@example.com", "1") == "subscribed" and ac.mailable("ada@example.com")
                assert hubspot.subscriptions[("ada@example.com", FakeHubSpot.MARKETING)] == "SUBSCRIBED"
        assert ac.list_status("ada@example.com", "1") == "unsubscribed" and not ac.mailable("ada@example.com")
        assert hubspot.subscriptions[("ada@example.com", FakeHubSpot.MARKETING)] == "NOT_SUBSCRIBED"
        # SMS consent is Klaviyo's only: neither tool gets a delivery for it.
        sms = event(CONSENT_CHANGED, channel="sms", state="subscribed", consented_at=NOW)
        with storage.session() as session:
            unit = UnitOfWork(session)
            changes = apply_event(session, sms)
            changes.subscriber.phone = "+16135550100"
            outbox.plan_consent(unit, settings, changes.subscriber, changes, sms)
    assert {(d.connector, d.payload["channel"]) for d in deliveries(storage, kind="consent")} == {
        ("activecampaign", "email"), ("hubspot", "email")}


def hubspot_settings(mappings, hubspot) -> Settings:
    return Settings.from_env(env={}, overrides={"HUB_MAPPINGS_DIR": str(mappings), "HUBSPOT_ACCESS_TOKEN": "pat",
                                                "HUBSPOT_BASE_URL": hubspot.url})


def owed(storage) -> list[tuple[str, int]]:
    with storage.session() as session:
        return session.execute(select(ProfileDue.connector, ProfileDue.subscriber_id)).all()


def test_a_slower_tool_is_owed_the_profile_and_its_push_sends_the_person_as_they_are_then(storage, mappings):
    with FakeHubSpot(token="pat") as hubspot:
        settings = hubspot_settings(mappings, hubspot)
        with storage.session() as session:
            person_id = subscriber(session).id
        for stage, points in (("engaged", 50), ("loyal", 90)):  # two drained batches before HubSpot's turn
            with storage.session() as session:
                unit = UnitOfWork(session)
                person = session.get(Subscriber, person_id)
                person.stage, person.loyalty_points = stage, points
                outbox.plan(unit, settings, person, changed(person), [], event())
                assert outbox.flush_pending_profiles(unit, settings) == 0
                assert outbox.planned_connectors(unit) == {"hubspot"}  # its push is asked for
        assert owed(storage) == [("hubspot", person_id)] and deliveries(storage) == []
        assert outbox.push_batch(storage, settings, "hubspot", now=NOW, limiter=Limiter())["sent"] == 1
    [row] = deliveries(storage)
    assert (row.connector, row.kind, row.status) == ("hubspot", "profile", SENT)
    assert hubspot.contacts["ada@example.com"]["hub_stage"] == "loyal"
    assert len(hubspot.calls) == 1 and owed(storage) == []


def test_a_slower_tool_owed_the_profile_of_someone_erased_since_is_sent_nothing(storage, mappings):
    with FakeHubSpot(token="pat") as hubspot:
        settings = hubspot_settings(mappings, hubspot)
        person = plan_profile(storage, settings)
        with storage.session() as session:
            session.get(Subscriber, person.id).erased_at = NOW
        assert outbox.push_batch(storage, settings, "hubspot", now=NOW, limiter=Limiter())["sent"] == 0
    assert hubspot.calls == [] and deliveries(storage) == [] and owed(storage) == []


def test_a_slower_tool_s_push_plans_no_more_than_it_takes_in_a_batch(storage, mappings, monkeypatch):
    monkeypatch.setattr(CONNECTORS["hubspot"], "max_batch", 3)
    with FakeHubSpot(token="pat") as hubspot:
        settings = hubspot_settings(mappings, hubspot)
        with storage.session() as session:
            unit = UnitOfWork(session)
            for i in range(7):
                person = subscriber(session, email=f"p{i}@example.com")
                outbox.plan(unit, settings, person, changed(person), [], event())
            outbox.flush_pending_profiles(unit, settings)
        assert outbox.push_batch(storage, settings, "hubspot", now=NOW, limiter=Limiter(), max_batches=1)["sent"] == 3
        # The rest wait as marks, planned from the people as they are at the next batch.
        assert len(deliveries(storage)) == 3 and len(owed(storage)) == 4
        assert outbox.push_batch(storage, settings, "hubspot", now=NOW, limiter=Limiter())["sent"] == 4
    assert len(hubspot.contacts) == 7 and owed(storage) == []


# Pushing --------------------------------------------------------------------------------

def queue(storage, settings, n=1):
    with storage.session() as session:
        unit = UnitOfWork(session)
        for i in range(n):
            person = subscriber(session, email=f"p{i}@example.com")
            outbox.plan(unit, settings, person, changed(person), [trigger(session, person)], event())
        outbox.flush_pending_profiles(unit, settings)
    return deliveries(storage)


def test_sent_deliveries_log_the_attempt(storage, settings):
    rows = queue(storage, settings)
    counts = outbox.push_batch(storage, settings, "scripted", now=NOW)
    assert (counts["sent"], counts["batches"], counts["more"]) == (2, 1, False)
    for row in deliveries(storage):
        assert (row.status, row.attempts, row.sent_at) == (SENT, 1, NOW)
        [attempt] = attempts(storage, row.id)
        assert (attempt.outcome, attempt.http_status, attempt.latency_ms, attempt.message) == ("sent", 200, 4, None)
    assert {i.delivery_id for i in Scripted.pushes[0]} == {r.id for r in rows}


def test_429_waits_exactly_what_retry_after_says(storage, settings):
    queue(storage, settings)
    Scripted.script = [lambda i: RetryAfter(http_status=429, seconds=7, message="Too many requests")]
    assert outbox.push_batch(storage, settings, "scripted", now=NOW)["retry"] == 2
    for row in deliveries(storage):
        assert (row.status, row.next_attempt_at, row.last_error) == \
            (RETRYING, NOW + timedelta(seconds=7), "Too many requests")
        assert attempts(storage, row.id)[0].retry_after == 7
    assert outbox.push_batch(storage, settings, "scripted", now=NOW + timedelta(seconds=6))["batches"] == 0
    assert outbox.push_batch(storage, settings, "scripted", now=NOW + timedelta(seconds=7))["sent"] == 2


def test_server_errors_back_off_then_go_to_the_dead_letter(storage, settings):
    queue(storage, settings)
    Scripted.script = [lambda i: RetryAfter(http_status=503, seconds=0, message="Service unavailable")] * 20
    at, waits = NOW, []
    for _ in range(outbox.MAX_ATTEMPTS):
        assert outbox.push_batch(storage, settings, "scripted", now=at)["batches"] == 1
        rows = deliveries(storage)
        if rows[0].status == RETRYING:
            waits.append((rows[0].next_attempt_at - at).total_seconds())
            at = max(r.next_attempt_at for r in rows)  # both due again (the jitter differs)
    assert waits == sorted(waits) and waits[0] >= 15 and len(waits) == outbox.MAX_ATTEMPTS - 1
    for row in deliveries(storage):
        assert (row.status, row.attempts, row.last_error) == (DEAD, outbox.MAX_ATTEMPTS, "Service unavailable")
        assert [a.http_status for a in attempts(storage, row.id)] == [503] * outbox.MAX_ATTEMPTS
    assert outbox.push_batch(storage, settings, "scripted", now=at + timedelta(days=1))["batches"] == 0


def test_a_permanent_failure_is_dead_at_once_with_the_tools_words(storage, settings):
    queue(storage, settings)
    Scripted.script = [lambda i: Failed(http_status=400, message="Invalid email address.")]
    assert outbox.push_batch(storage, settings, "scripted", now=NOW)["dead"] == 2
    assert {(r.status, r.attempts, r.last_error) for r in deliveries(storage)} == {(DEAD, 1, "Invalid email address.")}


def test_retry_puts_dead_letters_back_in_the_queue(storage, settings):
    queue(storage, settings, n=2)
    Scripted.script = [lambda i: Failed(http_status=422, message="no")]
    outbox.push_batch(storage, settings, "scripted", now=NOW)
    first, *others = deliveries(storage)
    with storage.session() as session:
        assert outbox.retry(session, delivery_ids=[first.id], now=NOW) == 1
    assert outbox.push_batch(storage, settings, "scripted", now=NOW)["sent"] == 1
    with storage.session() as session:
        assert outbox.retry(session, dead=True, now=NOW) == len(others)
        assert outbox.retry(session) == 0
    assert outbox.push_batch(storage, settings, "scripted", now=NOW)["sent"] == len(others)
    assert all(len(attempts(storage, r.id)) == 2 for r in deliveries(storage))


def test_a_push_waiting_in_place_after_a_request_slept_asks_the_limiter_again_soon(storage, settings, monkeypatch):
    # Four requests per half second, three per delivery: the second delivery's second request
    # sleeps for the window, so the connector holds the rest for as long, a guess. The window
    # it slept for empties at once: the push looks for other work briefly, asks the limiter
    # again, and sends every delivery, each once, in this one push.
    monkeypatch.setitem(CONNECTORS, "scripted", Metered)
    rows = queue(storage, settings, n=2)
    waits = []

    def wait_held(seconds):
        waits.append(seconds)
        time.sleep(seconds)
        return True

    counts = outbox.push_batch(storage, settings, "scripted", wait_held=wait_held,
                               limiter=Limiter(limits={"scripted:api": (Rate(4, 0.5),)}))
    assert counts["sent"] == len(rows) == 4 and counts["waited"] >= 1
    assert waits[0] == outbox.GUESSED_HOLD_LOOK_S
    assert {(r.status, r.attempts) for r in deliveries(storage)} == {(SENT, 1)}


def test_a_connector_crash_is_retried_not_lost(storage, settings):
    queue(storage, settings)
    Scripted.script = [lambda i: 1 / 0]
    assert outbox.push_batch(storage, settings, "scripted", now=NOW)["retry"] == 2
    assert {r.last_error for r in deliveries(storage)} == {"ZeroDivisionError: division by zero"}


def test_claimed_rows_are_leased_to_one_worker(storage, settings):
    queue(storage, settings)
    seen = []

    def other_worker_meanwhile(item):
        seen.append(outbox.push_batch(storage, settings, "scripted", now=NOW, limiter=Limiter())["batches"])
        return Sent(http_status=200)

    Scripted.script = [other_worker_meanwhile]
    outbox.push_batch(storage, settings, "scripted", now=NOW)
    assert seen and set(seen) == {0}


def test_a_delivery_whose_pushes_stop_mid_call_is_dead_once_its_tries_run_out(storage, settings):
    doomed, other = queue(storage, settings)
    with storage.session() as session:  # tried all but once; the last push died holding it
        session.execute(update(Delivery).where(Delivery.id == doomed.id).values(
            status=RETRYING, attempts=outbox.MAX_ATTEMPTS - 1, claimed_at=NOW - timedelta(minutes=5),
            next_attempt_at=NOW - timedelta(minutes=4)))
    counts = outbox.push_batch(storage, settings, "scripted", now=NOW)
    assert (counts["sent"], counts["interrupted"]) == (1, 0)
    assert [i.delivery_id for batch in Scripted.pushes for i in batch] == [other.id]
    [dead] = deliveries(storage, id=doomed.id)
    assert (dead.status, dead.attempts) == (DEAD, outbox.MAX_ATTEMPTS)
    assert "stopped mid-call" in dead.last_error
    assert [a.outcome for a in attempts(storage, doomed.id)] == [INTERRUPTED]


def test_only_the_newest_profile_update_is_sent(storage, settings):
    with storage.session() as session:
        person = subscriber(session)
    for stage in ("engaged", "loyal"):
        with storage.session() as session:
            unit = UnitOfWork(session)
            person = session.get(Subscriber, person.id)
            person.stage = stage
            outbox.plan(unit, settings, person, changed(person), [], event())
            outbox.flush_pending_profiles(unit, settings)
    counts = outbox.push_batch(storage, settings, "scripted", now=NOW)
    assert (counts["sent"], counts["cancelled"]) == (1, 1)
    older, newer = deliveries(storage)
    assert (older.status, older.last_error) == (CANCELLED, f"superseded by delivery {newer.id}")
    assert newer.status == SENT and [i.payload["fields"]["stage"] for i in Scripted.pushes[0]] == ["loyal"]


def test_an_older_profile_still_retrying_is_cancelled_once_a_newer_one_is_sent(storage, settings):
    person = plan_profile(storage, settings)
    Scripted.script = [lambda i: RetryAfter(http_status=502, seconds=0)]
    outbox.push_batch(storage, settings, "scripted", now=NOW)
    with storage.session() as session:
        unit = UnitOfWork(session)
        person = session.get(Subscriber, person.id)
        person.stage = "loyal"
        outbox.plan(unit, settings, person, changed(person), [], event())
        outbox.flush_pending_profiles(unit, settings)
    assert outbox.push_batch(storage, settings, "scripted", now=NOW)["sent"] == 1
    older, newer = deliveries(storage)
    assert (older.status, newer.status) == (CANCELLED, SENT)
    assert outbox.push_batch(storage, settings, "scripted", now=NOW + timedelta(days=1))["batches"] == 0


def test_a_push_lingers_briefly_for_a_fuller_batch(storage, settings, monkeypatch):
    import time

    # Lingering is bounded by the age of the oldest delivery: 5 s, so that a busy machine's
    # slow set-up does not age them past it before the push looks.
    monkeypatch.setattr(Scripted, "linger", (5.0, 100), raising=False)
    queue(storage, settings)
    started = time.monotonic()
    assert outbox.push_batch(storage, settings, "scripted")["sent"] == 2
    assert time.monotonic() - started >= outbox.LINGER_STEP_S and len(Scripted.pushes) == 1


def test_a_push_stops_lingering_once_nothing_more_comes(storage, settings, monkeypatch):
    """At the end of a burst the last deliveries go after one look, not after the whole linger."""
    import time

    monkeypatch.setattr(Scripted, "linger", (30.0, 100), raising=False)
    queue(storage, settings)
    started = time.monotonic()
    assert outbox.push_batch(storage, settings, "scripted")["sent"] == 2
    assert time.monotonic() - started < 5 and len(Scripted.pushes) == 1


def test_secrets_are_blanked_out_of_the_log(storage, settings):
    settings.HUB_API_TOKEN = "pk_live_abcdef"
    queue(storage, settings)
    Scripted.script = [lambda i: Failed(http_status=401, message="key pk_live_abcdef is not valid", request_id="r-1")]
    outbox.push_batch(storage, settings, "scripted", now=NOW)
    assert {a.message for r in deliveries(storage) for a in attempts(storage, r.id)} == {"key *** is not valid"}


def test_a_sweep_plans_its_triggers_and_changed_profiles(storage, settings):
    with storage.session() as session:
        unit = UnitOfWork(session)
        person = subscriber(session)
        fired = trigger(session, person)
        assert outbox.plan_sweep(unit, settings, [fired.id], [person.id]) == 2
        assert outbox.plan_sweep(unit, settings, [fired.id], [person.id]) == 0
    assert sorted(d.kind for d in deliveries(storage)) == ["event", "profile"]


def test_enabled_connectors_follow_the_settings(settings):
    assert outbox.enabled_connectors(settings) == ["scripted"]
    on = Settings.from_env(env={}, overrides={"KLAVIYO_API_KEY": "pk", "HUB_MAPPINGS_DIR": settings.HUB_MAPPINGS_DIR})
    assert outbox.enabled_connectors(on) == ["klaviyo", "scripted"]


# End to end with the Klaviyo stand-in ---------------------------------------------------

def test_klaviyo_gets_each_update_and_event_once_while_throttling_a_third(storage, tmp_path):
    with FakeKlaviyo(api_key="pk_e2e") as klaviyo:
        settings = Settings.from_env(env={}, overrides={"KLAVIYO_API_KEY": "pk_e2e", "KLAVIYO_BASE_URL": klaviyo.url})
        klaviyo.fail(429, retry_after=1, fraction=1 / 3)
        with storage.session() as session:
            unit = UnitOfWork(session)
            for i in range(40):
                person = subscriber(session, email=f"p{i}@example.com")
                person.consent = {"email": {"state": "subscribed", "source": "shopify",
                                            "at": "2026-11-01T10:00:00+00:00"}}
                consent = event(CONSENT_CHANGED, channel="email", state="subscribed")
                changes = Changes(CONSENT_CHANGED, subscriber=person,
                                  changed=[{"what": "email consent", "field": "state", "from": None,
                                            "to": "subscribed"}])
                outbox.plan(unit, settings, person, changes, [trigger(session, person)], consent)
            outbox.flush_pending_profiles(unit, settings)
        at = NOW
        for _ in range(30):
            outbox.push_batch(storage, settings, "klaviyo", now=at, limiter=Limiter(max_wait=0.01))
            if not deliveries(storage, status=RETRYING) and not deliveries(storage, status=QUEUED):
                break
            at += timedelta(hours=1)
        assert {d.status for d in deliveries(storage)} == {SENT}
        assert len(klaviyo.profiles) == 40 and len(klaviyo.events) == 40 and klaviyo.duplicate_events == 0
        # Live opt-ins: plain subscribes (a list's double opt-in and flows run), not historical imports.
        assert all(c["email"]["consent"] == "SUBSCRIBED" and not c["email"]["historical"]
                   for c in klaviyo.consent.values())
        assert any(c.status == 429 for c in klaviyo.calls)
        assert klaviyo.invalid == [] and klaviyo.crashes == []
        with storage.session() as session:
            assert session.scalar(select(func.count()).select_from(DeliveryAttempt).where(
                DeliveryAttempt.http_status == 429)) > 0


@pytest.mark.parametrize("people", [1, 24], ids=["one-by-one", "bulk"])
def test_a_cancelled_subscription_clears_plan_and_renewal_at_klaviyo(storage, people):
    with FakeKlaviyo(api_key="pk_cancel") as klaviyo:
        settings = Settings.from_env(env={}, overrides={"KLAVIYO_API_KEY": "pk_cancel",
                                                        "KLAVIYO_BASE_URL": klaviyo.url})
        with storage.session() as session:
            unit = UnitOfWork(session)
            for i in range(people):
                outbox.mark_dirty(unit, subscriber(session, email=f"p{i}@example.com").id)
            outbox.flush_pending_profiles(unit, settings)
        outbox.push_batch(storage, settings, "klaviyo", now=NOW)
        assert klaviyo.profile("p0@example.com")["properties"]["hub_plan"] == "Coffee monthly"
        klaviyo.calls.clear()
        cancelled = {f"p{i}@example.com" for i in range(0, people, 2)}
        with storage.session() as session:
            unit = UnitOfWork(session)
            for person in session.scalars(select(Subscriber).options(selectinload(Subscriber.subscriptions))):
                if person.email in cancelled:
                    person.subscriptions[0].status = "canceled"
                else:
                    person.tier = "Gold"
                outbox.mark_dirty(unit, person.id, person)
            outbox.flush_pending_profiles(unit, settings)
        outbox.push_batch(storage, settings, "klaviyo", now=NOW)
        assert {d.status for d in deliveries(storage)} == {SENT}
        for email in cancelled:
            properties = klaviyo.profile(email)["properties"]
            assert properties["hub_subscription_status"] == "canceled"
            assert properties.get("hub_plan") is None and properties.get("hub_next_renewal_at") is None
        for email in {f"p{i}@example.com" for i in range(people)} - cancelled:
            properties = klaviyo.profile(email)["properties"]
            assert (properties["hub_tier"], properties["hub_plan"]) == ("Gold", "Coffee monthly")
        if people > 1:  # the profiles that clear nothing still go in one bulk import
            assert len(klaviyo.operations("bulk_import_profiles")) == 1
        assert klaviyo.invalid == []


def test_a_clearing_not_yet_sent_is_carried_by_the_update_that_replaces_it(storage):
    settings = Settings.from_env(env={}, overrides={"KLAVIYO_API_KEY": "pk", "KLAVIYO_BASE_URL": "http://127.0.0.1:9"})
    with storage.session() as session:
        unit = UnitOfWork(session)
        person = subscriber(session)
        outbox.mark_dirty(unit, person.id, person)
        outbox.flush_pending_profiles(unit, settings)
    with storage.session() as session:
        session.execute(update(Delivery).values(status=SENT))
    for change in ("cancel", "tier"):  # the cancellation is still queued when the tier changes
        with storage.session() as session:
            unit = UnitOfWork(session)
            person = session.scalars(select(Subscriber).options(selectinload(Subscriber.subscriptions))).one()
            if change == "cancel":
                person.subscriptions[0].status = "canceled"
            else:
                person.tier = "Gold"
            outbox.mark_dirty(unit, person.id, person)
            outbox.flush_pending_profiles(unit, settings)
    first, cancelled, later = deliveries(storage)
    assert "cleared" not in first.payload
    assert cancelled.payload["cleared"] == later.payload["cleared"] == ["next_renewal_at", "plan"]


# A worker killed mid-push ---------------------------------------------------------------

LEASE_S = 2  # a short lease keeps these tests to seconds; the default is 60


def klaviyo_overrides(klaviyo) -> dict:
    return {"KLAVIYO_API_KEY": "pk_crash", "KLAVIYO_BASE_URL": klaviyo.url, "HUB_PUSH_LEASE_S": LEASE_S}


def push_in_a_worker(database_url: str, overrides: dict) -> None:
    """A worker process's push of the Klaviyo outbox, on the real clock."""
    settings = Settings.from_env(env={}, overrides=overrides)
    outbox.push_batch(Storage(database_url), settings, "klaviyo")


def queue_for_klaviyo(storage, settings, n=12) -> None:
    """n people, each with a profile update and a trigger's event: enough for the bulk endpoints."""
    with storage.session() as session:
        unit = UnitOfWork(session)
        for i in range(n):
            person = subscriber(session, email=f"p{i}@example.com")
            outbox.plan(unit, settings, person, changed(person), [trigger(session, person)], event())
        outbox.flush_pending_profiles(unit, settings)


def push_until_sent(storage, settings, deadline_s: float) -> Counter:
    """Push as a second worker would, until something is sent or `deadline_s` have passed."""
    counts: Counter = Counter()
    ends = time.monotonic() + deadline_s
    while not counts["sent"] and time.monotonic() < ends:
        counts.update(outbox.push_batch(storage, settings, "klaviyo", limiter=Limiter()))
        time.sleep(0.1)
    return counts


def test_a_worker_killed_mid_push_costs_no_duplicate_event_and_a_lease_of_delay(tmp_path):
    url = "sqlite:///" + str(tmp_path / "crash.db")
    storage = Storage(url)
    Base.metadata.create_all(storage.engine)
    with FakeKlaviyo(api_key="pk_crash") as klaviyo:
        overrides = klaviyo_overrides(klaviyo)
        settings = Settings.from_env(env={}, overrides=overrides)
        queue_for_klaviyo(storage, settings)
        # Klaviyo takes the events, but the answer never reaches the worker: it is killed first.
        stall = klaviyo.stall(path="/api/event-bulk-create-jobs")
        worker = multiprocessing.get_context("spawn").Process(target=push_in_a_worker, args=(url, overrides))
        worker.start()
        assert stall.reached.wait(120), "the worker never sent the events"
        os.kill(worker.pid, signal.SIGKILL)
        worker.join()
        assert len(klaviyo.events) == 12 and set(klaviyo.profile_writes.values()) == {1}
        held = deliveries(storage)
        assert {d.status for d in held} == {QUEUED}
        # Due again within a lease of the kill, not the old ten minutes.
        assert max(d.next_attempt_at for d in held) <= datetime.now(timezone.utc) + timedelta(seconds=LEASE_S)

        klaviyo.heal()
        counts = push_until_sent(storage, settings, deadline_s=LEASE_S + 30)
        assert (counts["sent"], counts["interrupted"]) == (24, 24)
        assert {d.status for d in deliveries(storage)} == {SENT}
        # Each event once at Klaviyo: the resends carried the same unique_id and were dropped.
        assert Counter(e["unique_id"] for e in klaviyo.events) == Counter({d.idempotency_key: 1
                                                                           for d in held if d.kind == "event"})
        assert klaviyo.duplicate_events == 12
        # Profile imports are repeated, once per crash, and say so.
        assert len(klaviyo.profiles) == 12 and set(klaviyo.profile_writes.values()) == {2}
        assert klaviyo.invalid == [] and klaviyo.crashes == []
    with storage.session() as session:
        for d in session.scalars(select(Delivery).options(selectinload(Delivery.attempts_log))):
            assert [a.outcome for a in d.attempts_log] == [INTERRUPTED, "sent"] and d.attempts == 2
            assert "resent after a crash" in attempt_sentences(d)[0]["text"]
    page = metrics.render(SimpleNamespace(storage=storage, queues=None, settings=settings))
    assert 'hub_deliveries_interrupted_total{connector="klaviyo",kind="event"} 12' in page
    assert 'hub_deliveries_interrupted_total{connector="klaviyo",kind="profile"} 12' in page
    storage.dispose()


def test_a_push_longer_than_its_lease_keeps_its_deliveries(storage):
    with FakeKlaviyo(api_key="pk_crash") as klaviyo:
        settings = Settings.from_env(env={}, overrides=klaviyo_overrides(klaviyo))
        queue_for_klaviyo(storage, settings)
        stall = klaviyo.stall(path="/api/event-bulk-create-jobs")
        first = threading.Thread(target=outbox.push_batch, args=(storage, settings, "klaviyo"))
        first.start()
        try:
            assert stall.reached.wait(60)
            time.sleep(LEASE_S * 2.5)  # the push has now lasted longer than its lease
            assert outbox.push_batch(storage, settings, "klaviyo", limiter=Limiter())["batches"] == 0
            # ...and were it to die now, its deliveries would be due within a lease.
            latest = max(d.next_attempt_at for d in deliveries(storage))
            assert latest <= datetime.now(timezone.utc) + timedelta(seconds=LEASE_S)
        finally:
            klaviyo.heal()
            first.join()
        assert {d.status for d in deliveries(storage)} == {SENT}
        assert len(klaviyo.events) == 12 and klaviyo.duplicate_events == 0
        assert set(klaviyo.profile_writes.values()) == {1}
    with storage.session() as session:
        assert session.scalar(select(func.count()).select_from(DeliveryAttempt).where(
            DeliveryAttempt.outcome == INTERRUPTED)) == 0


def test_a_push_reads_the_due_deliveries_alone_after_a_burst_was_analyzed(database_url, settings):
    """PostgreSQL analyzes the delivery table on its own as it grows: at a burst's start most
    deliveries are queued, and once they are sent the statistics still say so. A push's claim,
    and each look for a fuller batch (every quarter second), then seemed cheapest as a scan of
    every delivery ever made and a sort."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's statistics mislead its planner here; SQLite's are never taken")
    storage = Storage(database_url)
    table = Delivery.__table__
    row = {"connector": "scripted", "kind": "profile", "payload": {}, "attempts": 0, "history": False,
           "next_attempt_at": NOW - timedelta(hours=2), "created_at": NOW - timedelta(hours=2)}
    with storage.engine.begin() as conn:
        conn.execute(table.insert(), [dict(row, subscriber_id=n, idempotency_key=f"p{n}", status="queued")
                                      for n in range(1000)])
    with storage.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE delivery")
    with storage.engine.begin() as conn:
        conn.execute(update(Delivery).values(status="sent"))
        conn.execute(table.insert(), [dict(row, subscriber_id=n, idempotency_key=f"p{n}",
                                           status="queued" if n >= 9700 else "sent") for n in range(1000, 10000)])
    looks = []

    def _look(conn, cursor, statement, parameters, *args):
        if statement.lstrip().startswith("SELECT") and "FROM delivery" in statement:
            looks.append((statement, parameters))

    sqlalchemy_event.listen(storage.engine, "before_cursor_execute", _look)
    try:
        assert outbox._due_count(storage, Scripted, 500)[0] == 300
        claimed, _, _ = outbox._claim(storage, Scripted, NOW, timedelta(minutes=1))
        assert len(claimed) == Scripted.max_batch
    finally:
        sqlalchemy_event.remove(storage.engine, "before_cursor_execute", _look)
    assert len(looks) == 2
    for statement, parameters in looks:
        with storage.engine.connect() as conn:
            plan = "\n".join(conn.exec_driver_sql("EXPLAIN " + statement, parameters).scalars())
        assert "ix_delivery_due" in plan and "Seq Scan on delivery" not in plan, plan
    storage.dispose()
