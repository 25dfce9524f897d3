"""The worker's jobs with real RQ and Redis: a push held by one tool's rate limit yields the worker."""
from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timezone

import pytest
from rq import Queue
from sqlalchemy import select

from hub import Hub, jobs
from hub.config import Settings
from hub.context import use_hub
from hub.db.engine import Storage
from hub.db.unit import UnitOfWork
from hub.events import CUSTOMER_UPSERTED
from hub.models import QUEUED, SENT, Delivery, DeliveryAttempt, Subscriber, Subscription, Trigger
from hub.queues import Queues
from hub.sync import outbox
from hub.sync.apply import Changes
from standins.activecampaign import FakeActiveCampaign
from standins.klaviyo import FakeKlaviyo
from tests.samples import TEST_SETTINGS

pytestmark = pytest.mark.redis

PEOPLE = 12


@pytest.fixture
def two_tools(database_url, redis_server, tmp_path):
    """A hub pushing to ActiveCampaign (5 requests/s, its documented limit) and Klaviyo stand-ins."""
    with FakeActiveCampaign(api_key="ac") as ac, FakeKlaviyo(api_key="pk_jobs") as klaviyo:
        settings = Settings.from_env(env={}, overrides={
            "DATABASE_URL": database_url, "REDIS_URL": redis_server.url, **TEST_SETTINGS,
            "ACTIVECAMPAIGN_URL": ac.url, "ACTIVECAMPAIGN_API_KEY": "ac",
            "KLAVIYO_API_KEY": "pk_jobs", "KLAVIYO_BASE_URL": klaviyo.url})
        hub = Hub(settings=settings, storage=Storage(database_url), queues=Queues(settings))
        hub.queues.connection.flushdb()
        use_hub(hub)
        yield hub, ac, klaviyo
        use_hub(None)
        hub.storage.dispose()


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


def work(hub: Hub) -> None:
    """One RQ worker in burst mode: starts the pushes whose time has come, runs every queued job."""
    queues = [Queue(name, connection=hub.queues.connection) for name in ("inbox", "outbox", "default")]
    jobs.Worker(queues, connection=hub.queues.connection).work(burst=True, with_scheduler=True)


def test_klaviyo_is_not_held_behind_activecampaign_s_rate_limit_and_each_delivery_goes_once(two_tools):
    hub, ac, klaviyo = two_tools
    plan_people(hub, PEOPLE)
    assert statuses(hub, "activecampaign")[QUEUED] >= PEOPLE and statuses(hub, "klaviyo")[QUEUED] >= PEOPLE
    # ActiveCampaign's push is first in the queue; at 5 requests/s its dozen people take seconds.
    jobs.request_pushes(hub, ["activecampaign", "klaviyo"])
    work(hub)
    # Klaviyo got everything while ActiveCampaign still waits for tokens, without the worker.
    assert set(statuses(hub, "klaviyo")) == {SENT}
    assert len(klaviyo.profiles) == PEOPLE
    assert statuses(hub, "activecampaign")[QUEUED] > 0
    assert Queue("outbox", connection=hub.queues.connection).scheduled_job_registry.count == 1
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
    assert len(klaviyo.events) == PEOPLE and klaviyo.duplicate_events == 0
    assert sorted(c["email"] for c in ac.contacts.values()) == sorted(f"p{i}@example.com" for i in range(PEOPLE))
