"""GET /metrics: Prometheus text, counted from the database and Redis at each scrape."""
from __future__ import annotations

import re
from datetime import datetime, timezone

import redis as redis_lib
from sqlalchemy import update

from hub.models import InboxEvent, ProfileDue, Subscriber
from tests.hub.web.test_webhooks import subscription_event
from tests.samples import post


def sample(page: str, name: str, **labels) -> float | None:
    """The value of one sample line of the page, or None when the page has no such line."""
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(label_text)}\}} (\S+)$", page, re.MULTILINE)
    return float(match.group(1)) if match else None


def test_each_scrape_counts_what_the_database_holds_then(client, hub):
    first = client.get("/metrics")
    assert first.status_code == 200
    assert first.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    page = first.get_data(as_text=True)
    for name, kind in (("hub_inbox_open_events", "gauge"), ("hub_deliveries", "gauge"),
                       ("hub_deliveries_interrupted_total", "counter"), ("hub_subscribers", "gauge"),
                       ("hub_queue_depth", "gauge"), ("hub_profiles_owed", "gauge"),
                       ("hub_inbox_waiting_events", "gauge")):
        assert f"# TYPE {name} {kind}\n" in page and f"# HELP {name} " in page
    assert sample(page, "hub_inbox_open_events", source="stripe", status="pending") is None
    assert sample(page, "hub_queue_depth", queue="inbox") == 0

    assert post(client, "stripe", subscription_event("evt_m1")).status_code == 200
    assert post(client, "stripe", subscription_event("evt_m2")).status_code == 200
    page = client.get("/metrics").get_data(as_text=True)
    assert sample(page, "hub_inbox_open_events", source="stripe", status="pending") == 2
    assert sample(page, "hub_queue_depth", queue="inbox") == hub.queues.depth()["inbox"]


def test_metrics_still_answer_when_redis_is_down(client, hub):
    hub.queues._connection = redis_lib.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    response = client.get("/metrics")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "# TYPE hub_queue_depth gauge" in page and "hub_queue_depth{" not in page
    assert "# TYPE hub_inbox_open_events gauge" in page


def test_profiles_owed_to_a_slower_tool_are_counted_per_tool(client, hub):
    with hub.storage.session() as s:
        people = [Subscriber(email=f"p{i}@example.com") for i in range(3)]
        s.add_all(people)
        s.flush()
        s.add_all([ProfileDue(connector="hubspot", subscriber_id=p.id, marked_at=datetime.now(timezone.utc))
                   for p in people] + [ProfileDue(connector="activecampaign", subscriber_id=people[0].id,
                                                  marked_at=datetime.now(timezone.utc))])
    page = client.get("/metrics").get_data(as_text=True)
    assert sample(page, "hub_profiles_owed", connector="hubspot") == 3
    assert sample(page, "hub_profiles_owed", connector="activecampaign") == 1


def test_events_waiting_for_their_platform_are_counted_apart_from_other_failures(client, hub):
    for n in range(3):
        assert post(client, "stripe", subscription_event(f"evt_w{n}")).status_code == 200
    with hub.storage.session() as s:
        s.execute(update(InboxEvent).values(status="failed"))
        s.execute(update(InboxEvent).where(InboxEvent.event_id != "evt_w0")
                  .values(retry_at=datetime.now(timezone.utc)))
    page = client.get("/metrics").get_data(as_text=True)
    assert sample(page, "hub_inbox_open_events", source="stripe", status="failed") == 3
    assert sample(page, "hub_inbox_waiting_events", source="stripe") == 2
