"""POST /api/usage: a usage report is stored, the upsell rule runs on it, the trigger
goes to the outbox; bad reports get a 400 that names the field."""
from __future__ import annotations

import pytest
import yaml
from sqlalchemy import select

from hub.models import Delivery, Subscriber, Trigger
from hub.sync.inbox import drain_inbox
from hub.sync.rules import params as params_
from tests.samples import API_HEADERS, load_sample, post, stripe_event

PLAN = "FFBEGINNER_00000000000000"  # the price of Stripe's sample subscription


@pytest.fixture
def subscriber(client, hub, tmp_path):
    """A Stripe subscriber on a plan with a usage limit of 100 (mappings/rules.yaml)."""
    folder = tmp_path / "mappings"
    folder.mkdir()
    data = yaml.safe_load(params_.DEFAULT_PATH.read_text())
    data["upsell"]["plan_limits"] = {PLAN: 100}
    (folder / "rules.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    hub.settings.HUB_MAPPINGS_DIR = str(folder)
    hub.settings.KLAVIYO_API_KEY = "pk_test_usage"
    post(client, "stripe", stripe_event("customer.created", {
        "id": "cus_00000000000000", "object": "customer", "email": "una@example.com", "name": "Una User",
        "created": 1_780_000_000}, event_id="evt_cus", created=1_780_000_000))
    obj = load_sample("shared:stripe/pay/subscription.created.json")["object"]
    post(client, "stripe",
         stripe_event("customer.subscription.created", obj, event_id="evt_sub", created=1_780_000_100))
    drain_inbox(hub.storage, hub.settings)
    yield "una@example.com"


def report(client, **body):
    return client.post("/api/usage", json=body, headers=API_HEADERS)


def test_usage_above_70_percent_of_the_plan_limit_fires_one_upsell(client, hub, subscriber):
    first = report(client, subscriber=subscriber, quantity=40, metric="api_calls", at="2026-06-01T10:00:00Z")
    assert first.status_code == 201
    assert first.get_json()["recorded"] == {"at": "2026-06-01T10:00:00+00:00", "quantity": 40, "metric": "api_calls"}
    assert first.get_json()["triggers"] == []
    # 40 + 35 = 75 of 100 within 14 days: above 70 %.
    second = report(client, subscriber=subscriber, quantity=35, metric="api_calls", at="2026-06-10T10:00:00Z")
    assert second.get_json()["triggers"] == ["Upsell Opportunity"]
    # Still above, same billing cycle: nothing more.
    assert report(client, subscriber=subscriber, quantity=20, at="2026-06-11T10:00:00Z").get_json()["triggers"] == []
    with hub.storage.session() as s:
        [upsell] = s.scalars(select(Trigger).where(Trigger.name == "Upsell Opportunity")).all()
        assert (upsell.properties["reason"], upsell.properties["usage"], upsell.properties["limit"],
                upsell.properties["percent"]) == ("usage", 75, 100, 75)
        assert s.scalars(select(Delivery).where(Delivery.trigger_id == upsell.id,
                                                Delivery.connector == "klaviyo")).one()
        assert len(s.scalar(select(Subscriber.usage))) == 3
    timeline = client.get(f"/api/subscribers/{subscriber}", headers=API_HEADERS).get_json()["timeline"]
    assert "Upsell Opportunity" in str(timeline)


def test_usage_spread_beyond_14_days_does_not_count(client, subscriber):
    assert report(client, subscriber=subscriber, quantity=60, at="2026-06-01T10:00:00Z").status_code == 201
    assert report(client, subscriber=subscriber, quantity=60, at="2026-06-16T10:00:00Z").get_json()["triggers"] == []


def test_subscriber_by_id(client, hub, subscriber):
    with hub.storage.session() as s:
        sid = s.scalar(select(Subscriber.id))
    assert report(client, subscriber=sid, quantity=1).get_json()["subscriber_id"] == sid


@pytest.mark.parametrize("body, words", [
    ({"quantity": 3}, "subscriber: an email or a subscriber id is required"),
    ({"subscriber": "una@example.com"}, "quantity: a number is required, got None"),
    ({"subscriber": "una@example.com", "quantity": "lots"}, "quantity: a number is required, got 'lots'"),
    ({"subscriber": "una@example.com", "quantity": -2}, "quantity: must be 0 or more"),
    ({"subscriber": "una@example.com", "quantity": True}, "quantity: a number is required"),
    ({"subscriber": "una@example.com", "quantity": 1, "at": "yesterday"}, "at: an ISO-8601 instant"),
    ({"subscriber": "una@example.com", "quantity": 1, "metric": ""}, "metric: a name of 1-100 characters"),
    ({"subscriber": "una@example.com", "quantity": 1, "qty": 2}, "unknown field 'qty'"),
    ([1, 2], "expected JSON"),
])
def test_bad_reports_are_400_naming_the_field(client, subscriber, body, words):
    response = client.post("/api/usage", json=body, headers=API_HEADERS)
    assert response.status_code == 400 and words in response.get_json()["error"]


def test_unknown_subscriber_is_404_and_a_missing_token_401(client, subscriber):
    assert report(client, subscriber="nobody@example.com", quantity=1).status_code == 404
    assert client.post("/api/usage", json={"subscriber": subscriber, "quantity": 1}).status_code == 401
