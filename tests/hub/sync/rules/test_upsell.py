"""Upsell Opportunity: usage above 70 % of the limit over 14 days, or just after a renewal."""
from datetime import timedelta

import pytest

from hub.sync.rules import upsell
from tests.hub.sync.rules.conftest import at, sub, subscriber, tweak

NOW = at("2026-06-20T12:00")


def usage(*pairs):
    return tuple({"at": (NOW - timedelta(days=d)).isoformat(), "quantity": q} for d, q in pairs)


def person(reports=(), **sub_kw):
    base = dict(usage_limit=1000, current_period_start=at("2026-06-01"), started_at=at("2026-01-01"))
    return subscriber(usage=reports, subscriptions=(sub(**{**base, **sub_kw}),))


@pytest.mark.parametrize("reports, fires", [
    (((1, 400), (5, 301)), True),     # 701 > 700
    (((1, 400), (5, 300)), False),    # exactly 70 % is not above it
    (((1, 400), (14, 400)), False),   # 14 days ago is outside the window
    (((1, 400), (13, 400)), True),
])
def test_usage_over_the_window(p, reports, fires):
    got = upsell.opportunities(person(usage(*reports)), "new", NOW, p)
    assert bool(got) == fires
    if got:
        assert got[0].properties["reason"] == "usage" and got[0].properties["limit"] == 1000


def test_levels_use_the_peak():
    p = tweak(**{"upsell.usage_aggregate": "max"})
    assert upsell.opportunities(person(usage((1, 701), (2, 10))), "new", NOW, p)
    assert not upsell.opportunities(person(usage((1, 600), (2, 600))), "new", NOW, p)


def test_plan_limit_from_the_mappings():
    p = tweak(**{"upsell.plan_limits": {"price_1": 100}})
    assert upsell.opportunities(person(usage((1, 71)), usage_limit=None), "new", NOW, p)


def test_no_limit_no_usage_upsell(p):
    assert upsell.opportunities(person(usage((1, 10 ** 6)), usage_limit=None), "new", NOW, p) == []


@pytest.mark.parametrize("stage, renewed, fires", [
    ("engaged", "2026-06-13T12:00", True),    # exactly 7 days ago
    ("loyal", "2026-06-19", True),
    ("engaged", "2026-06-13T11:59", False),   # a minute more than 7 days
    ("new", "2026-06-19", False),
    ("at_risk", "2026-06-19", False),
])
def test_after_a_renewal_for_engaged_and_loyal(p, stage, renewed, fires):
    got = upsell.opportunities(person(current_period_start=at(renewed)), stage, NOW, p)
    assert bool(got) == fires
    if got:
        assert got[0].properties["reason"] == "renewal"


def test_the_first_period_is_not_a_renewal(p):
    s = person(current_period_start=at("2026-06-19"), started_at=at("2026-06-19"))
    assert upsell.opportunities(s, "engaged", NOW, p) == []


def test_once_per_billing_cycle(p):
    a = upsell.opportunities(person(usage((1, 800))), "engaged", NOW, p)[0]
    b = upsell.opportunities(person(current_period_start=at("2026-06-19")), "engaged", NOW, p)[0]
    later = upsell.opportunities(person(usage((1, 800))), "engaged", NOW + timedelta(days=3), p)[0]
    assert a.occasion == later.occasion == "2026-06-01/stripe:sub_1"
    assert b.occasion == "2026-06-19/stripe:sub_1"
