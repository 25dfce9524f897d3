"""Subscription Cancelled, then Win Back 30 days later unless they came back."""
import pytest

from hub.sync.rules import winback
from tests.hub.sync.rules.conftest import at, day, sub, subscriber

ENDED = sub(status="canceled", canceled_at=at("2026-01-31T18:00"))


def test_cancelled_once_per_cancellation_day(p):
    d = winback.cancelled(ENDED, at("2026-01-31T18:00"), p)
    assert (d.name, d.occasion) == ("Subscription Cancelled", "2026-01-31/stripe:sub_1")
    assert winback.cancelled(sub(), at("2026-01-31"), p) is None


@pytest.mark.parametrize("today, count", [("2026-03-01", 0), ("2026-03-02", 1), ("2026-03-03", 0)])
def test_thirty_days_later(p, today, count):
    got = winback.win_back(subscriber(subscriptions=(ENDED,)), day(today), p)
    assert len(got) == count
    if got:
        assert got[0].name == "Win Back" and got[0].status == "fired"


def test_skipped_when_they_came_back(p):
    back = sub(id=2, source_id="sub_2", started_at=at("2026-02-20"))
    (d,) = winback.win_back(subscriber(subscriptions=(ENDED, back)), day("2026-03-02"), p)
    assert d.status == "skipped"


def test_only_after_the_last_subscription_ended(p):
    later = sub(id=2, source_id="sub_2", status="canceled", canceled_at=at("2026-02-10"))
    person = subscriber(subscriptions=(ENDED, later))
    assert winback.win_back(person, day("2026-03-02"), p) == []
    assert winback.win_back(person, day("2026-03-12"), p)[0].occasion == "2026-02-10/stripe:sub_2"
