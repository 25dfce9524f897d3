"""Loyalty: points per unit of currency spent, tiers, Tier Changed."""
import pytest

from hub.sync.rules import loyalty
from tests.hub.sync.rules.conftest import at, subscriber, tweak

NOW = at("2026-05-01T10:00")


@pytest.mark.parametrize("spend, currency, points", [
    (2599, "USD", 25), (0, None, 0), (1500, "JPY", 1500), (1999, "KWD", 1), (-100, "USD", 0)])
def test_points_per_unit_of_currency(p, spend, currency, points):
    assert loyalty.points(spend, currency, p) == points


def test_fractional_rate():
    assert loyalty.points(1000, "EUR", tweak(**{"loyalty.points_per_unit": 2.5})) == 25


@pytest.mark.parametrize("points, tier", [(0, "Bronze"), (499, "Bronze"), (500, "Silver"),
                                          (1999, "Silver"), (2000, "Gold")])
def test_tiers(p, points, tier):
    assert loyalty.tier(points, p) == tier


def test_below_the_lowest_tier():
    assert loyalty.tier(50, tweak(**{"loyalty.tiers": {"Bronze": 100, "Gold": 1000}})) is None


def test_moves_fire_tier_changed(p):
    tier, d = loyalty.tier_changed(subscriber(tier="Bronze"), 500, NOW, p)
    assert tier == "Silver" and d.name == "Tier Changed"
    assert d.properties == {"from": "Bronze", "to": "Silver", "points": 500, "direction": "up"}
    tier, d = loyalty.tier_changed(subscriber(tier="Gold"), 1200, NOW, p)   # a refund took points back
    assert tier == "Silver" and d.properties["direction"] == "down"


def test_no_move_no_trigger(p):
    assert loyalty.tier_changed(subscriber(tier="Silver"), 600, NOW, p) == ("Silver", None)
    assert loyalty.tier_changed(subscriber(tier=None), 10, NOW, p) == ("Bronze", None)   # first tier


def test_a_big_first_order_is_a_move(p):
    tier, d = loyalty.tier_changed(subscriber(tier=None), 800, NOW, p)
    assert tier == "Silver" and d.properties["from"] == "Bronze"
