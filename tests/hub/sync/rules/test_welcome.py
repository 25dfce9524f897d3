"""Subscription Started and the welcome sequence (day 0, 2, 5), skipped once churned."""
from datetime import date
from zoneinfo import ZoneInfo

import pytest

from hub.sync.rules import welcome
from hub.sync.rules.state import Window
from tests.hub.sync.rules.conftest import at, day, sub, subscriber, tweak


def person(*subs):
    return subscriber(subscriptions=subs or (sub(started_at=at("2026-05-30T22:00")),))


def test_started_once_per_subscription(p):
    d = welcome.started(sub(started_at=at("2026-05-30T22:00")))
    assert (d.name, d.rule, d.occasion) == ("Subscription Started", "subscription-started", "stripe:sub_1")
    assert d.properties["plan"] == "Coffee Monthly" and d.properties["started_at"] == "2026-05-30T22:00:00+00:00"


def test_first_step_only_for_the_first_subscription(p):
    older = sub(id=1, source_id="sub_old", started_at=at("2025-01-01"), status="canceled")
    newer = sub(id=2, source_id="sub_new", started_at=at("2026-05-30"))
    assert welcome.first_step(person(older, newer), "stripe:sub_new", p) is None
    d = welcome.first_step(person(newer), "stripe:sub_new", p)
    assert (d.rule, d.occasion, d.properties["step"], d.properties["day"]) == ("welcome-0d", "first-subscription", 1, 0)


@pytest.mark.parametrize("today, steps", [
    ("2026-05-31", []),           # day 1
    ("2026-06-01", [2]),          # day 2
    ("2026-06-02", []),
    ("2026-06-03", []),
    ("2026-06-04", [3]),          # day 5
    ("2026-06-05", []),
])
def test_later_steps_on_their_days(p, today, steps):
    got = welcome.later_steps(person(), day(today), p)
    assert [d.properties["step"] for d in got] == steps
    assert all(d.status == "fired" and d.occasion == "first-subscription" for d in got)


def test_steps_count_shop_days():
    p = tweak(timezone="Europe/Paris")   # 22:00 UTC on May 30 is May 31 in Paris
    w = Window(date(2026, 6, 2), date(2026, 6, 2), ZoneInfo("Europe/Paris"))
    (d,) = welcome.later_steps(person(), w, p)
    assert d.properties["step"] == 2 and d.due_at == at("2026-06-01T22:00")


def test_skipped_if_churned_meanwhile(p):
    gone = sub(started_at=at("2026-05-30T22:00"), status="canceled", canceled_at=at("2026-06-01"))
    (d,) = welcome.later_steps(person(gone), day("2026-06-04"), p)
    assert d.status == "skipped" and "skipped" in d.reason


def test_no_subscription_no_steps(p):
    assert welcome.later_steps(subscriber(), day("2026-06-04"), p) == []
