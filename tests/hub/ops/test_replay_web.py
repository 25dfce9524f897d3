"""The sync log's replay preview: one event or a range, the diff per subscriber, nothing kept
until the operator confirms."""
from __future__ import annotations

import pytest

from tests.hub.ops.test_replay import customer_and_subscription, lose_state, snapshot
from tests.hub.web.conftest import add_staff, log_in, operator, token  # noqa: F401 - operator: a fixture
from tests.hub.web.test_synclog import text_of


@pytest.fixture
def lost(client, hub):
    hub.settings.KLAVIYO_API_KEY = "pk_replay"
    customer_and_subscription(client, hub)
    lose_state(hub)
    return snapshot(hub)


def test_the_event_page_previews_a_replay_and_keeps_nothing(operator, hub, lost):
    page = operator.get("/sync-log/events/2").get_data(as_text=True)
    assert "Show what a replay would change" in page
    response = operator.post("/sync-log/replay", data={"csrf_token": token(operator), "event_id": "2", "dry_run": "1"})
    assert response.status_code == 200
    shown = text_of(response)
    assert "What a replay would change" in shown and "nothing below is kept" in shown
    assert "Subscriber #1 (c***@example.com), events #2" in shown
    assert "Triggers: Subscription Started, Welcome Step" in shown
    assert "Deliveries: klaviyo event Subscription Started, klaviyo event Welcome Step, klaviyo profile" in shown
    assert snapshot(hub) == lost


def test_a_range_previewed_then_replayed_for_real_applies_the_same_diff(operator, hub, lost):
    listed = text_of(operator.get("/sync-log/events?since=2000-01-01T00:00&source=stripe"))
    assert "Show what replaying this range would change" in listed
    form = {"csrf_token": token(operator), "since": "2000-01-01T00:00", "source": "stripe"}
    preview = text_of(operator.post("/sync-log/replay", data={**form, "dry_run": "1"}))
    assert snapshot(hub) == lost
    diff = preview[preview.index("Subscriber #1"):preview.index("Events (2)")]
    assert "Profile: first name Cleo" in diff and "Stage: — → New" in diff
    done = text_of(operator.post("/sync-log/replay", data=form))
    assert "Replayed" in done and diff in done
    assert snapshot(hub)["people"] == [("Cleo", "new")]


def test_a_replay_post_without_its_csrf_token_is_refused(operator, hub, lost):
    response = operator.post("/sync-log/replay", data={"event_id": "2", "dry_run": "1"})
    assert response.status_code == 400
    assert snapshot(hub) == lost


def test_viewers_cannot_replay(app, hub, lost):
    add_staff(hub, "victor@shop.test", "viewer")
    viewer = app.test_client()
    log_in(viewer, "victor@shop.test")
    response = viewer.post("/sync-log/replay", data={"csrf_token": token(viewer), "event_id": "2"})
    assert response.status_code == 403
    after = snapshot(hub)
    after["counts"]["staff_user"] -= 1  # the viewer
    assert after == lost
