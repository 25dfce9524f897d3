"""Card Expiring 30 days before the end of the card's expiry month."""
from datetime import date

import pytest

from hub.rules import card_expiry
from tests.hub.rules.conftest import at, day, sub, subscriber, tweak


def holder(**cards):
    live = sub(update_payment_url="https://billing.example/portal")
    return subscriber(cards=cards, subscriptions=(live,))


def card(month, year, **kw):
    return {"brand": "visa", "last4": "4242", "exp_month": month, "exp_year": year,
            "updated_at": "2026-01-01T00:00:00+00:00", **kw}


@pytest.mark.parametrize("month, year, due", [
    (11, 2026, "2026-11-01"),   # expires Dec 1: 30 days back is Nov 1
    (12, 2026, "2026-12-02"),   # expires Jan 1 (year end)
    (2, 2028, "2028-01-31"),    # leap year: expires Mar 1 2028
    (2, 2027, "2027-01-30"),
    (1, 27, "2027-01-02"),      # two-digit year
])
def test_warning_day(p, month, year, due):
    s = holder(**{"stripe:pm_1": card(month, year)})
    d = date.fromisoformat(due)
    before, of = day(str(date.fromordinal(d.toordinal() - 1))), day(due)
    assert card_expiry.expiring(s, before, at(due), p) == []
    (warning,) = card_expiry.expiring(s, of, at(due + "T06:00"), p)
    assert warning.name == "Card Expiring"
    assert warning.properties["update_payment_url"] == "https://billing.example/portal"
    assert warning.properties["last4"] == "4242"
    full_year = year + 2000 if year < 100 else year
    assert (warning.properties["exp_year"], warning.properties["exp_month"]) == (full_year, month)
    assert card_expiry.due_months(of, p) == [(full_year, month)]   # the sweep looks for these cards


def test_due_months_are_rare(p):
    assert card_expiry.due_months(day("2026-11-01"), p) == [(2026, 11)]
    assert card_expiry.due_months(day("2026-11-02"), p) == []


def test_suppressed_when_auto_updated_or_replaced(p):
    auto = holder(**{"stripe:pm_1": card(11, 2026, auto_updated=True)})
    assert card_expiry.expiring(auto, day("2026-11-01"), at("2026-11-01T06:00"), p) == []
    replaced = holder(**{"stripe:pm_1": card(11, 2026),
                         "stripe:pm_2": card(5, 2030, updated_at="2026-06-01T00:00:00+00:00")})
    assert card_expiry.expiring(replaced, day("2026-11-01"), at("2026-11-01T06:00"), p) == []


def test_switched_off():
    p = tweak(**{"card_expiry.enabled": False})
    s = holder(**{"stripe:pm_1": card(11, 2026)})
    assert card_expiry.expiring(s, day("2026-11-01"), at("2026-11-01T06:00"), p) == []


def test_notice_takes_later_days_until_the_card_stops_working(p):
    s = holder(**{"stripe:pm_1": card(11, 2026)})
    assert card_expiry.expiring(s, day("2026-11-15"), at("2026-11-15T06:00"), p) == []
    assert len(card_expiry.expiring(s, day("2026-11-15"), at("2026-11-15T06:00"), p, notice=True)) == 1
    assert card_expiry.expiring(s, day("2026-12-01"), at("2026-12-01T06:00"), p, notice=True) == []


def test_cards_without_expiry_are_ignored(p):
    s = holder(**{"shopify:1": {"brand": None, "exp_month": None, "exp_year": None}})
    assert card_expiry.expiring(s, day("2026-11-01"), at("2026-11-01T06:00"), p, notice=True) == []
