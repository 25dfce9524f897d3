"""The worker's jobs with real RQ and Redis: a push held by one tool's rate limit yields the worker."""
from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
from rq import Queue
from rq.job import Job
from rq.utils import utcformat
from sqlalchemy import select, update

import connectors
from connectors.hubspot import HubSpotConnector
from hub import Hub, jobs
from hub.config import Settings
from hub.context import make_hub, use_hub
from hub.db.unit import UnitOfWork
from hub.events import CUSTOMER_UPSERTED
from hub.models import QUEUED, SENT, Delivery, DeliveryAttempt, Subscriber, Subscription, Trigger
from hub.ops import support, synclog
from hub.queues import QUEUE_NAMES, SLOW_PUSH_QUEUE, SLOW_PUSH_WAIT_LIMIT_S
from hub.sync import outbox
from hub.sync.apply import Changes
from standins.activecampaign import FakeActiveCampaign
from standins.hubspot import FakeHubSpot
from standins.klaviyo import FakeKlaviyo
from tests.samples import TEST_SETTINGS

pytestmark = pytest.mark.redis

PEOPLE = 12


@contextmanager
def hub_with(database_url: str, redis_server, klaviyo: FakeKlaviyo, **tool_settings):
    """The process's hub, pushing to the Klaviyo stand-in and the tools of `tool_settings`."""
    settings = Settings.from_env(env={}, overrides={
        "DATABASE_URL": database_url, "REDIS_URL": redis_server.url, **TEST_SETTINGS,
        "KLAVIYO_API_KEY": "pk_jobs", "KLAVIYO_BASE_URL": klaviyo.url, **tool_settings})
    hub = make_hub(settings=settings)
    hub.queues.connection.flushdb()
    use_hub(hub)
    try:
        yield hub
    finally:
        use_hub(None)
        hub.storage.dispose()


@pytest.fixture
def two_tools(database_url, redis_server, tmp_path):
    """A hub pushing to ActiveCampaign (5 requests/s, its documented limit; the account set up
    as `hub install` leaves it) and Klaviyo stand-ins."""
    with FakeActiveCampaign(api_key="ac") as ac, FakeKlaviyo(api_key="pk_jobs") as klaviyo, \
            hub_with(database_url, redis_server, klaviyo, ACTIVECAMPAIGN_URL=ac.url,
                     ACTIVECAMPAIGN_API_KEY="ac") as hub:
        ac.set_up(connectors.load_mapping(hub.settings, "activecampaign")["fields"].values())
        yield hub, ac, klaviyo


@pytest.fixture
def hubspot_and_klaviyo(database_url, redis_server):
    """A hub pushing to HubSpot and Klaviyo stand-ins."""
    with FakeHubSpot(token="pat-jobs") as hubspot, FakeKlaviyo(api_key="pk_jobs") as klaviyo, \
            hub_with(database_url, redis_server, klaviyo, HUBSPOT_ACCESS_TOKEN="pat-jobs",
                     HUBSPOT_BASE_URL=hubspot.url) as hub:
        yield hub, hubspot, klaviyo


def plan_people(hub: Hub, n: int) -> None:
    now = datetime.now(timezone.utc)
    with hub.storage.session() as session:
        unit = UnitOfWork(session)
        for i in range(n):
            person = Subscriber(email=f"p{i}@example.com", first_name="Ada", stage="active", consent={},
                                currency="USD", health_score=60, tier="Bronze", loyalty_points=0)
            person.subscriptions.append(Subscription(source="stripe", source_id=f"sub_{i}", status="active",
                                                     plan="Coffee", interval="month", interval_count=1,
                                                     amount=2500, currency="USD"))
            session.add(person)
            session.flush()
            fired = Trigger(subscriber_id=person.id, rule="renewal-7d", occasion=f"o{i}", name="Renewal Reminder",
                            status="fired", properties={}, due_at=now)
            session.add(fired)
            session.flush()
            outbox.plan(unit, hub.settings, person, Changes(CUSTOMER_UPSERTED, subscriber=person), [fired], None)
        outbox.flush_pending_profiles(unit, hub.settings)


def statuses(hub: Hub, connector: str) -> Counter:
    with hub.storage.session() as session:
        return Counter(session.scalars(select(Delivery.status).where(Delivery.connector == connector)))


def waiting(hub: Hub, connector: str) -> int:
    """Profiles and events the tool has not been sent: queued deliveries, and the profiles a
    slower tool is owed and plans as it pushes."""
    with hub.storage.session() as session:
        owed = synclog.owed_profile_counts(session).get(connector, 0)
    return statuses(hub, connector)[QUEUED] + owed


def work(hub: Hub, max_jobs: int | None = None) -> None:
    """One RQ worker in burst mode: starts the pushes whose time has come, runs every queued
    job (or the first `max_jobs`)."""
    queues = [Queue(name, connection=hub.queues.connection) for name in QUEUE_NAMES]
    jobs.Worker(queues, connection=hub.queues.connection).work(burst=True, with_scheduler=True, max_jobs=max_jobs)


def test_klaviyo_is_not_held_behind_activecampaign_s_rate_limit_and_each_delivery_goes_once(two_tools):
    hub, ac, klaviyo = two_tools
    people = 6
    plan_people(hub, people)
    assert statuses(hub, "activecampaign")[QUEUED] >= people and statuses(hub, "klaviyo")[QUEUED] >= people
    # A worker runs ActiveCampaign's push: at 5 requests/s its half-dozen people take seconds, and
    # once a window is spent the push waits for the next one, the worker still on it.
    pushing = ThreadPoolExecutor(1).submit(jobs.push_batch_job, "activecampaign")
    deadline = time.monotonic() + 10
    while len(ac.calls) < 5 and time.monotonic() < deadline:  # its first window spent
        time.sleep(0.01)
    jobs.request_pushes(hub, ["klaviyo"])
    # Klaviyo's push waiting makes ActiveCampaign's yield the worker held, not go on waiting
    # for its windows, and come back through the scheduler once its window has room.
    held = pushing.result(timeout=10)
    assert held["resume_in"] > 0
    assert Queue(SLOW_PUSH_QUEUE, connection=hub.queues.connection).scheduled_job_registry.count == 1
    work(hub, max_jobs=1)
    assert set(statuses(hub, "klaviyo")) == {SENT}
    assert len(klaviyo.profiles) == people
    assert statuses(hub, "activecampaign")[QUEUED] > 0
    # The held push comes back as the bucket refills, until everything is sent.
    deadline = time.monotonic() + 60
    while statuses(hub, "activecampaign")[QUEUED] and time.monotonic() < deadline:
        time.sleep(0.5)
        work(hub)
    assert set(statuses(hub, "activecampaign")) == {SENT}
    # Exactly once: one attempt per delivery, none for the holds; one event per trigger at Klaviyo.
    with hub.storage.session() as session:
        tries = Counter(session.scalars(select(DeliveryAttempt.delivery_id)))
        ids = session.scalars(select(Delivery.id)).all()
    assert tries == Counter(ids)
    assert len(klaviyo.events) == people and klaviyo.duplicate_events == 0
    assert sorted(c["email"] for c in ac.contacts.values()) == sorted(f"p{i}@example.com" for i in range(people))


def test_a_held_push_waits_for_its_window_in_place_while_no_other_job_waits(two_tools, monkeypatch):
    hub, ac, _ = two_tools
    # A slice long enough that a busy machine's first batch does not spend it before the wait.
    monkeypatch.setattr(jobs, "PUSH_SLICE_S", 3.0)
    plan_people(hub, PEOPLE)
    slow = Queue(SLOW_PUSH_QUEUE, connection=hub.queues.connection)
    # Nothing else for the worker to do: the push sleeps through each hold and goes on, not
    # through RQ's scheduler (whole seconds, looked at once a second: half the tool's pace).
    pushed = jobs.push_batch_job("activecampaign")
    assert pushed["waited"] >= 1 and not pushed["resume_in"]
    assert len(ac.calls) > 5  # more than ActiveCampaign takes in one window
    assert slow.scheduled_job_registry.count == 0
    assert slow.count == 1  # its slice spent, it asked for the next push at once


def test_a_push_waiting_in_place_yields_only_to_a_job_no_idle_worker_takes(two_tools, monkeypatch):
    hub, _, _ = two_tools
    # Another worker was idle: each job it sees queued is gone at its next look.
    taken_at_once = iter([True, False] * 20)
    monkeypatch.setattr(hub.queues, "work_waiting", lambda: next(taken_at_once, False))
    assert jobs.wait_for_window(hub, "activecampaign", 0.3)
    # Every worker is busy: the job is still there at the next look.
    monkeypatch.setattr(hub.queues, "work_waiting", lambda: True)
    assert not jobs.wait_for_window(hub, "activecampaign", 0.3)


def test_a_tool_with_rows_always_due_yields_the_worker_to_klaviyo_after_its_slice(hubspot_and_klaviyo, monkeypatch):
    hub, hubspot, klaviyo = hubspot_and_klaviyo
    # HubSpot takes 10,000 contacts per 10 s: under a stream of changes it always has a batch
    # due. Here several batches are due, and a slice is one batch.
    monkeypatch.setattr(HubSpotConnector, "max_batch", 5)
    monkeypatch.setattr(jobs, "PUSH_SLICE_S", 0.0)
    plan_people(hub, PEOPLE)
    jobs.request_pushes(hub, ["hubspot", "klaviyo"])  # HubSpot's push first in the queue
    work(hub, max_jobs=2)
    # Klaviyo's push ran after HubSpot's first slice, not after all of HubSpot's batches.
    assert set(statuses(hub, "klaviyo")) == {SENT} and len(klaviyo.profiles) == PEOPLE
    assert waiting(hub, "hubspot") > 0
    work(hub)
    assert set(statuses(hub, "hubspot")) == {SENT}


def test_pushes_held_together_leave_one_push_waiting_for_the_window(two_tools):
    hub, _, _ = two_tools
    # Two pushes of one tool ran side by side and its rate limit held both.
    hub.queues.defer_push("activecampaign", 0.2)
    hub.queues.defer_push("activecampaign", 0.2)
    assert Queue(SLOW_PUSH_QUEUE, connection=hub.queues.connection).scheduled_job_registry.count == 1


def test_klaviyo_s_push_runs_before_a_slow_tool_s_asked_for_first_which_still_runs_when_idle(hubspot_and_klaviyo):
    hub, hubspot, klaviyo = hubspot_and_klaviyo
    plan_people(hub, PEOPLE)
    jobs.request_pushes(hub, ["hubspot", "klaviyo"])  # HubSpot asked first
    work(hub, max_jobs=1)
    assert set(statuses(hub, "klaviyo")) == {SENT} and len(klaviyo.profiles) == PEOPLE
    assert not statuses(hub, "hubspot")[SENT] and waiting(hub, "hubspot") == PEOPLE
    work(hub)  # nothing else waits: HubSpot's push runs
    assert set(statuses(hub, "hubspot")) == {SENT} and len(hubspot.contacts) == PEOPLE


def test_a_slow_tool_s_push_waiting_a_minute_goes_first_so_a_stream_never_starves_it(hubspot_and_klaviyo):
    hub, hubspot, klaviyo = hubspot_and_klaviyo
    plan_people(hub, PEOPLE)
    jobs.request_pushes(hub, ["hubspot", "klaviyo"])
    # HubSpot's push has waited behind other work for longer than the limit.
    redis = hub.queues.connection
    waiting = Queue(SLOW_PUSH_QUEUE, connection=redis).job_ids[0]
    redis.hset(Job.key_for(waiting), "enqueued_at",
               utcformat(datetime.now(timezone.utc) - timedelta(seconds=SLOW_PUSH_WAIT_LIMIT_S + 1)))
    work(hub, max_jobs=1)
    assert set(statuses(hub, "hubspot")) == {SENT} and len(hubspot.contacts) == PEOPLE
    assert set(statuses(hub, "klaviyo")) == {QUEUED}
    work(hub)
    assert set(statuses(hub, "klaviyo")) == {SENT} and len(klaviyo.profiles) == PEOPLE


def test_a_slow_tool_s_push_gives_way_to_a_push_waiting_for_the_worker(hubspot_and_klaviyo, monkeypatch):
    hub, hubspot, klaviyo = hubspot_and_klaviyo
    monkeypatch.setattr(HubSpotConnector, "max_batch", 5)
    plan_people(hub, PEOPLE)
    # HubSpot's push started while nothing waited; Klaviyo's push was asked for meanwhile.
    hub.queues.request_push("klaviyo")
    sent = jobs.push_batch_job("hubspot")
    assert sent["sent"] == 5 and sent["more"]  # one batch, then it gives way
    work(hub, max_jobs=1)
    assert set(statuses(hub, "klaviyo")) == {SENT} and waiting(hub, "hubspot") == PEOPLE - 5
    work(hub)
    assert set(statuses(hub, "hubspot")) == {SENT} and len(hubspot.contacts) == PEOPLE
    with hub.storage.session() as session:  # each delivery tried once
        tries = Counter(session.scalars(select(DeliveryAttempt.delivery_id)))
        assert tries == Counter(session.scalars(select(Delivery.id)))


def test_a_tool_its_rate_limit_held_queues_behind_other_work_until_it_has_caught_up(two_tools):
    hub, _, klaviyo = two_tools
    plan_people(hub, PEOPLE)
    # Klaviyo answered 429 a moment ago: its limit holds every request for a few seconds
    # (long enough that the push finds it still held on a machine kept busy).
    for key in ("klaviyo:profile-bulk-import-jobs", "klaviyo:event-bulk-create-jobs"):
        outbox.limiter_for(hub.queues.connection).pause(key, 5.0)
    assert jobs.push_batch_job("klaviyo")["held"]
    hub.queues.clear_push_request("klaviyo")
    assert hub.queues.push_queue("klaviyo") == SLOW_PUSH_QUEUE
    deadline = time.monotonic() + 30
    while statuses(hub, "klaviyo")[QUEUED] and time.monotonic() < deadline:
        time.sleep(0.5)
        work(hub)
    assert set(statuses(hub, "klaviyo")) == {SENT} and len(klaviyo.profiles) == PEOPLE
    assert hub.queues.push_queue("klaviyo") == "outbox"  # caught up: queued like any tool again


def test_staff_s_send_again_queues_a_slow_tool_s_push_where_its_other_pushes_wait(hubspot_and_klaviyo):
    hub, _, _ = hubspot_and_klaviyo
    assert support.request_push(hub, ["hubspot", "klaviyo"])
    redis = hub.queues.connection
    assert Queue(SLOW_PUSH_QUEUE, connection=redis).count == 1
    assert Queue("outbox", connection=redis).count == 1


def test_deliveries_a_killed_worker_held_go_when_its_lease_runs_out_not_at_the_backstop_after(two_tools):
    hub, _, klaviyo = two_tools
    plan_people(hub, 2)
    # A push claimed Klaviyo's deliveries and its worker was killed before the answer: they
    # are held until the lease it took runs out, two seconds from now.
    lapses = datetime.now(timezone.utc) + timedelta(seconds=2)
    with hub.storage.session() as session:
        session.execute(update(Delivery).where(Delivery.connector == "klaviyo").values(
            claimed_at=datetime.now(timezone.utc), next_attempt_at=lapses))
    jobs.backstop_job()  # the one-minute backstop runs before the lease has run out
    work(hub)
    assert statuses(hub, "klaviyo")[QUEUED] == 4 and not klaviyo.profiles
    # No webhook comes and the next backstop is a minute away: a worker still pushes them
    # once the lease has run out.
    deadline = time.monotonic() + 30
    while statuses(hub, "klaviyo")[QUEUED] and time.monotonic() < deadline:
        time.sleep(0.5)
        work(hub)
    assert set(statuses(hub, "klaviyo")) == {SENT}
    assert len(klaviyo.profiles) == 2 and len(klaviyo.events) == 2
