"""With Redis down the webhook is still answered 200 and nothing is lost."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from hub import create_app, jobs
from hub.config import Settings
from hub.context import make_hub, use_hub
from hub.models import InboxEvent, Subscriber
from tests.conftest import RedisServer
from tests.samples import TEST_SETTINGS, post, stripe_event

pytestmark = pytest.mark.redis


@pytest.fixture
def outage_hub(database_url, tmp_path):
    server = RedisServer(tmp_path).start()
    settings = Settings.from_env(env={}, overrides={"DATABASE_URL": database_url,
                                                    "REDIS_URL": server.url, **TEST_SETTINGS})
    hub = make_hub(settings=settings)
    use_hub(hub)
    yield hub, server
    use_hub(None)
    server.stop()
    hub.storage.dispose()


def test_hundred_webhooks_during_a_redis_outage_are_all_processed_after_it(outage_hub):
    hub, server = outage_hub
    client = create_app(hub=hub).test_client()
    server.stop()
    answers = [post(client, "stripe", stripe_event(
        "customer.created", {"id": f"cus_{n}", "object": "customer", "email": f"buyer{n}@example.com",
                             "name": f"Buyer {n}", "created": 1_700_000_000}, event_id=f"evt_{n}")).status_code
        for n in range(100)]
    assert answers == [200] * 100
    with hub.storage.session() as s:
        assert s.scalar(select(func.count()).select_from(InboxEvent).where(InboxEvent.status == "pending")) == 100

    server.start()
    # What `hub worker` does at start (and RQ cron every minute): drain what was left behind.
    jobs.backstop_job()
    jobs.Worker([hub.queues.queue("inbox")], connection=hub.queues.connection).work(burst=True)
    with hub.storage.session() as s:
        assert s.scalar(select(func.count()).select_from(InboxEvent).where(
            InboxEvent.status == "processed")) == 100
        assert s.scalar(select(func.count()).select_from(Subscriber)) == 100
