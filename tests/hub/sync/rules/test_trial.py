"""Trial Ending three days before the trial ends."""
import pytest

from hub.sync.rules import trial
from tests.hub.sync.rules.conftest import at, day, sub, tweak


def trialing(end="2026-03-01T08:00"):
    return sub(status="trialing", trial_end=at(end))


@pytest.mark.parametrize("today, count", [("2026-02-25", 0), ("2026-02-26", 1), ("2026-02-27", 0)])
def test_three_days_before_across_a_month_end(p, today, count):
    got = trial.ending(trialing(), day(today), at(today + "T05:00"), p)
    assert len(got) == count
    if got:
        assert got[0].name == "Trial Ending"
        assert got[0].occasion == "2026-03-01/stripe:sub_1"
        assert got[0].properties["trial_end"] == "2026-03-01T08:00:00+00:00"


def test_leap_year():
    p = tweak(**{"trial.days_before": 3})
    assert trial.ending(trialing("2028-03-01T08:00"), day("2028-02-27"), at("2028-02-27T05:00"), p)
    assert not trial.ending(trialing("2028-03-01T08:00"), day("2028-02-26"), at("2028-02-26T05:00"), p)


def test_platform_notice_takes_a_passed_day_while_the_trial_is_on(p):
    s = trialing()
    assert trial.ending(s, day("2026-02-27"), at("2026-02-27T05:00"), p) == []
    assert len(trial.ending(s, day("2026-02-27"), at("2026-02-27T05:00"), p, notice=True)) == 1
    assert trial.ending(s, day("2026-02-20"), at("2026-02-20T05:00"), p, notice=True) == []   # too early


@pytest.mark.parametrize("s", [sub(status="active", trial_end=at("2026-03-01")), sub(status="trialing")])
def test_only_running_trials(p, s):
    assert trial.ending(s, day("2026-02-26"), at("2026-02-26T05:00"), p, notice=True) == []


def test_nothing_after_the_trial_ended(p):
    assert trial.ending(trialing(), day("2026-03-01"), at("2026-03-01T09:00"), p, notice=True) == []
