"""Stage and health score: each stage with its reason, edges of every threshold."""
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from hub.sync.rules import lifecycle
from hub.sync.rules.state import Window
from tests.hub.sync.rules.conftest import at, payment, sub, subscriber, tweak


def paying(started="2026-01-01T12:00", **kw):
    """A subscriber with one running monthly subscription."""
    base = dict(first_seen_at=at(started), last_activity_at=at(started), paid_payments=1,
                subscriptions=(sub(started_at=at(started)),))
    return subscriber(**{**base, **kw})


@pytest.mark.parametrize("now, stage", [
    ("2026-01-30T23:59", "new"),      # day 29
    ("2026-01-31T00:00", "engaged"),  # day 30: no longer new
])
def test_new_for_thirty_days_after_the_first_subscription(p, now, stage):
    a = lifecycle.assess(paying(), at(now), p)
    assert a.stage == stage
    if stage == "new":
        assert a.reason == "first subscription 29 days ago"


def test_new_counts_the_shop_calendar_days(p):
    p = tweak(timezone="Asia/Tokyo")  # 2026-01-01T16:00Z is already Jan 2 in Tokyo
    s = paying(started="2026-01-01T16:00")
    assert lifecycle.assess(s, at("2026-01-31T14:59"), p).stage == "new"      # Jan 31 in Tokyo: day 29
    assert lifecycle.assess(s, at("2026-01-31T15:00"), p).stage == "engaged"  # Feb 1 in Tokyo: day 30


def test_first_order_makes_new_too(p):
    s = subscriber(first_seen_at=at("2025-01-01"), first_order_at=at("2026-03-01"),
                   last_order_at=at("2026-03-01"), last_activity_at=at("2026-03-01"), orders_count=1)
    a = lifecycle.assess(s, at("2026-03-03"), p)
    assert (a.stage, a.reason) == ("new", "first order 2 days ago")


def test_open_payment_failure_is_at_risk_with_its_age(p):
    s = paying(payments=(payment(first_failed_at=at("2026-03-10T09:00")),))
    a = lifecycle.assess(s, at("2026-03-12T08:00"), p)
    assert (a.stage, a.reason) == ("at_risk", "payment failed 2 days ago")
    assert a.health == lifecycle.assess(paying(), at("2026-03-12T08:00"), p).health - 30


def test_failure_of_an_ended_subscription_is_not_open(p):
    s = paying(payments=(payment(subscription_status="canceled"),))
    assert lifecycle.assess(s, at("2026-03-12"), p).stage == "engaged"


def test_scheduled_cancellation_is_at_risk(p):
    s = paying(subscriptions=(sub(cancel_at_period_end=True, current_period_end=at("2026-04-01T12:00")),))
    a = lifecycle.assess(s, at("2026-03-20"), p)
    assert (a.stage, a.reason) == ("at_risk", "cancellation scheduled for 2026-04-01")


@pytest.mark.parametrize("days, stage", [(44, "engaged"), (45, "at_risk")])
def test_long_silence_without_a_running_subscription(p, days, stage):
    last = at("2026-01-10T15:00")
    s = subscriber(first_seen_at=at("2025-01-01"), first_order_at=at("2025-06-01"), last_order_at=last,
                   last_activity_at=last, orders_count=3)
    a = lifecycle.assess(s, last + timedelta(days=days), p)
    assert a.stage == stage
    if stage == "at_risk":
        assert a.reason == "no order in 45 days"


def test_paused_subscription_does_not_count_as_running(p):
    last = at("2026-01-01")
    s = paying(started="2025-01-01", last_activity_at=last,
               subscriptions=(sub(status="paused", started_at=at("2025-01-01")),))
    a = lifecycle.assess(s, at("2026-02-18"), p)
    assert (a.stage, a.reason) == ("at_risk", "no activity in 48 days")


def test_churned_when_no_subscription_runs(p):
    s = paying(subscriptions=(sub(status="canceled", canceled_at=at("2026-03-01T10:00")),))
    a = lifecycle.assess(s, at("2026-03-04"), p)
    assert (a.stage, a.reason) == ("churned", "subscription ended 3 days ago")


def test_churned_outranks_an_old_payment_failure(p):
    s = paying(subscriptions=(sub(status="canceled", canceled_at=at("2026-03-01")),),
               payments=(payment(subscription_status=None),))
    assert lifecycle.assess(s, at("2026-03-04"), p).stage == "churned"


@pytest.mark.parametrize("days, stage", [(179, "at_risk"), (180, "churned")])
def test_one_time_buyers_lapse(p, days, stage):
    last = at("2026-01-01")
    s = subscriber(first_seen_at=last, first_order_at=last, last_order_at=last, last_activity_at=last,
                   orders_count=1)
    assert lifecycle.assess(s, last + timedelta(days=days), p).stage == stage


def test_loyal_needs_tenure_and_health(p):
    s = paying(started="2025-01-01T12:00", last_activity_at=at("2026-03-01"), paid_payments=14)
    a = lifecycle.assess(s, at("2026-03-10"), p)
    assert a.stage == "loyal" and a.health == 50 + 25 + 15 + 10
    assert a.reason.startswith("customer for 433 days, 14 paid orders")
    young = paying(started="2026-01-01T12:00", paid_payments=14)
    assert lifecycle.assess(young, at("2026-03-10"), p).stage == "engaged"  # tenure 68 < 180


def test_health_is_clamped_and_weights_recency_most(p):
    assert lifecycle.assess(subscriber(first_seen_at=at("2020-01-01")), at("2026-01-01"), p).health == 0
    s = paying(started="2025-01-01", payments=(payment(),),
               subscriptions=(sub(cancel_at_period_end=True, started_at=at("2025-01-01")),))
    assert 0 <= lifecycle.assess(s, at("2026-03-12"), p).health <= 100
    h = p.lifecycle.health
    assert max(h.recency.values()) > max(max(h.frequency.values()), max(h.tenure.values()))


def test_stage_changed_fires_on_a_move_not_on_the_first_stage(p):
    now = at("2026-03-12T08:00")
    s = paying(payments=(payment(),))
    a = lifecycle.assess(s, now, p)
    assert lifecycle.stage_changed(s, a, now) is None                      # first stage
    moved = lifecycle.stage_changed(paying(stage="engaged", payments=(payment(),)), a, now)
    assert moved.name == "Stage Changed"
    assert moved.properties == {"from": "engaged", "to": "at_risk", "reason": "payment failed 2 days ago",
                                "health_score": a.health}
    assert moved.occasion == "engaged->at_risk/2026-03-12T08:00:00+00:00"
    assert lifecycle.stage_changed(paying(stage="at_risk", payments=(payment(),)), a, now) is None


@pytest.mark.parametrize("tz", ["UTC", "America/Los_Angeles"])
def test_changes_without_new_data_happen_only_on_boundary_days(tz):
    """The daily sweep recomputes only subscribers crossing a boundary: nobody else may change."""
    p = tweak(timezone=tz)
    bounds = p.lifecycle.boundaries()
    people = [
        subscriber(first_seen_at=at("2025-11-01"), first_order_at=at("2025-11-03T20:00"),
                   last_order_at=at("2026-01-07T22:00"), last_activity_at=at("2026-01-07T22:00"), orders_count=4),
        paying(started="2025-12-30T23:30"),
        paying(started="2025-10-01", subscriptions=(sub(status="canceled", canceled_at=at("2026-01-02"),
                                                        started_at=at("2025-10-01")),)),
        subscriber(first_seen_at=at("2025-12-15T07:00")),
    ]
    for s in people:
        before = None
        for i in range(0, 420):
            now = at("2026-01-01T12:00") + timedelta(days=i)
            a = lifecycle.assess(s, now, p)
            if before is not None and (a.stage, a.health) != (before.stage, before.health):
                w = Window.today(now, ZoneInfo(tz))
                f = lifecycle.facts(s, now, p)
                crossed = f.inactive_days in bounds["inactive"] or f.tenure_days in bounds["tenure"]
                assert crossed, (s, now, before, a)
                assert w.first == w.last
            before = a
