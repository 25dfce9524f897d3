"""Loyalty points and tiers: points per unit of currency spent, refunds take them back.

Points follow lifetime spend (paid orders and invoices minus refunds, kept by the model),
so a replayed or repeated event can never count twice.
"""
from __future__ import annotations

from datetime import datetime
from decimal import ROUND_FLOOR, Decimal

from hub.sync.rules.params import RuleParams
from hub.sync.rules.state import Due, SubscriberState
from hub.values import minor_exponent


def points(lifetime_spend: int, currency: str | None, p: RuleParams) -> int:
    units = Decimal(max(0, lifetime_spend)) / (10 ** minor_exponent(currency or "USD"))
    return int((units * Decimal(str(p.loyalty.points_per_unit))).to_integral_value(ROUND_FLOOR))


def tier(points_: int, p: RuleParams) -> str | None:
    """The highest tier whose threshold is reached (None below the lowest)."""
    return next((name for name, floor in reversed(p.loyalty.tiers.items()) if points_ >= floor), None)


def tier_changed(s: SubscriberState, new_points: int, now: datetime, p: RuleParams) -> tuple[str | None, Due | None]:
    """(the tier for `new_points`, a Tier Changed on a move). A subscriber without a tier yet
    counts as holding the tier of 0 points, so reaching Silver on a first order is a move."""
    new = tier(new_points, p)
    old = s.tier or tier(0, p)
    if new == old:
        return new, None
    ranks = list(p.loyalty.tiers)
    up = old is None or (new is not None and ranks.index(new) > ranks.index(old))
    return new, Due(rule="tier", occasion=f"{old}->{new}/{now.isoformat(timespec='seconds')}",
                    name="Tier Changed",
                    properties={"from": old, "to": new, "points": new_points,
                                "direction": "up" if up else "down"},
                    reason=f"{new_points} points: {old or 'no tier'} → {new or 'no tier'}", due_at=now)
