"""Card Expiring: 30 days before a card on file expires (the end of its expiry month).

Where the platform says which card it charges (Stripe's default payment method), only that
card is warned about; elsewhere a card is left alone once a card that lasts longer arrives
after it. A card updated in place (by the customer or the network's card updater) is warned
about for its new expiry; a removed card has none.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta

from hub.sync.rules.params import RuleParams
from hub.sync.rules.state import Due, SubscriberState, Window, day_start, local_day, short_ref

RULE = "card-expiring"


def stops_working(card: dict) -> date | None:
    """First day the card no longer works (the 1st of the month after its expiry month)."""
    try:
        month, year = int(card.get("exp_month")), int(card.get("exp_year"))
    except (TypeError, ValueError):
        return None
    year += 2000 if year < 100 else 0
    if not 1 <= month <= 12:
        return None
    return date(year + month // 12, month % 12 + 1, 1)


def due_months(window: Window, p: RuleParams) -> list[tuple[int, int]]:
    """(year, month) of the cards whose warning day is in the window (often none)."""
    out = []
    for day in window.days():
        end = day + timedelta(days=p.card_expiry.days_before)
        if end.day == 1:
            last = end - timedelta(days=1)
            out.append((last.year, last.month))
    return out


def _replaced(key: str, card: dict, cards: dict) -> bool:
    source = key.partition(":")[0] + ":"
    if any(other.get("default") for k, other in cards.items() if k.startswith(source)):
        return not card.get("default")  # the platform charges its default card, and only it
    mine = stops_working(card)
    return any(stops_working(other) and stops_working(other) > mine
               and other.get("updated_at", "") >= card.get("updated_at", "")
               for k, other in cards.items() if k != key)


def any_due(cards: dict, window: Window, p: RuleParams) -> bool:
    """Cheap first pass of the sweep: a card whose warning day is in the window."""
    return any((end := stops_working(c)) and end - timedelta(days=p.card_expiry.days_before) in window
               for c in cards.values())


def expiring(s: SubscriberState, window: Window, now: datetime, p: RuleParams,
             notice: bool = False) -> list[Due]:
    """Warnings whose day is in the window; `notice` (a platform's expiry notice) also
    takes earlier days while the card still works."""
    if not p.card_expiry.enabled:
        return []
    out = []
    for key, card in sorted(s.cards.items()):
        end = stops_working(card)
        if end is None or _replaced(key, card, s.cards):
            continue
        due_day = end - timedelta(days=p.card_expiry.days_before)
        if local_day(now, p.tz) >= end or not (due_day in window or (notice and due_day <= window.last)):
            continue
        source = key.partition(":")[0]
        last_day = end - timedelta(days=1)
        out.append(Due(
            rule=RULE, occasion=f"{last_day.year}-{last_day.month:02d}/{short_ref(*key.partition(':')[::2])}",
            name="Card Expiring",
            properties={"brand": card.get("brand"), "last4": card.get("last4"),
                        "exp_month": last_day.month, "exp_year": last_day.year,
                        "valid_until": last_day.isoformat(), "source": source,
                        "update_payment_url": s.link(source)},
            reason=f"{card.get('brand') or 'card'} ending {card.get('last4') or '?'} expires "
                   f"after {last_day.isoformat()}",
            due_at=day_start(due_day, p.tz)))
    return out
