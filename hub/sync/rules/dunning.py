"""Dunning: Payment Failed at once, retries on a cadence, reminders around each retry.

In `notify` mode the platform retries: Payment Retry Scheduled and the reminders follow
its announced next attempt (Stripe next_payment_attempt, Chargebee next_retry_at), one
retry at a time, and end when it says it will not try again (status retries_exhausted)
or stops collecting (void, uncollectible: no longer open). Without an announced attempt,
and in `orchestrate` mode, retries fall 3, 7 and 14 days after the first failure (at most
3 within 21 days), and the platform is asked to retry on each retry day (its Source's
retry_payment, asked by hub.sync.retries once the sweep is committed). A Payment Reminder
goes 3 days before each retry, on it and 3 days after. A hard decline (stolen card…) gets
no retries, only the reminders asking for a new card. Paid within 21 days of the first
failure: Payment Recovered.
"""
from __future__ import annotations

import logging
from datetime import date, datetime, timedelta

from hub.sync.rules.params import RuleParams
from hub.sync.rules.state import (
    RETRIES_EXHAUSTED,
    Due,
    PaymentState,
    Window,
    day_start,
    iso,
    local_day,
)
from hub.values import money_text

log = logging.getLogger(__name__)

FAILED, RETRY, REMINDER, RECOVERED = "payment-failed", "payment-retry", "payment-reminder", "payment-recovered"


def schedule(pay: PaymentState, p: RuleParams) -> list[tuple[int, date]]:
    """(attempt number, retry day) of each retry still to come after the first failure."""
    if platform_gave_up(pay, p):
        return []
    if p.dunning.mode == "notify" and pay.next_retry_at is not None:
        # The attempts so far count the first charge: the next is retry number attempt_count.
        return [(max(1, pay.attempt_count or 1), local_day(pay.next_retry_at, p.tz))]
    start = local_day(pay.first_failed_at, p.tz)
    return [(n, start + timedelta(days=d)) for n, d in enumerate(p.dunning.retries(), 1)]


def platform_gave_up(pay: PaymentState, p: RuleParams) -> bool:
    """Notify mode, and the platform will not try this payment again: dunning is over."""
    return p.dunning.mode == "notify" and pay.status == RETRIES_EXHAUSTED


def failed(pay: PaymentState, now: datetime, p: RuleParams) -> Due | None:
    """Payment Failed, once per unpaid payment, the moment its first failure is known."""
    if not pay.is_open:
        return None
    retries = [] if pay.hard_decline else [day.isoformat() for _, day in schedule(pay, p)]
    action = "retry_scheduled" if retries else "update_payment_method"
    return Due(rule=FAILED, occasion=pay.ref[:120], name="Payment Failed",
               properties={**pay.properties(), "retry_dates": retries,
                           "action": action},
               reason=(f"payment of {money_text(pay.amount, pay.currency) or 'an unknown amount'} failed"
                       + (": hard decline, a new card is needed" if pay.hard_decline else "")),
               due_at=pay.first_failed_at)


def recovered(pay: PaymentState, p: RuleParams) -> Due | None:
    """Payment Recovered when a failed payment is paid within the recovery window."""
    if pay.status != "succeeded" or not pay.first_failed_at or not pay.paid_at:
        return None
    if pay.paid_at - pay.first_failed_at > timedelta(days=p.dunning.recovery_days):
        return None
    days = (pay.paid_at - pay.first_failed_at).days
    return Due(rule=RECOVERED, occasion=pay.ref[:120], name="Payment Recovered",
               properties={**pay.properties(), "paid_at": iso(pay.paid_at), "days_to_recover": days},
               reason=f"paid {days} days after the first failure", due_at=pay.paid_at)


def due(pay: PaymentState, window: Window, now: datetime, p: RuleParams) -> list[Due]:
    """Retries and reminders of an open payment whose day falls in the window."""
    if not pay.is_open or platform_gave_up(pay, p):
        return []
    start = local_day(pay.first_failed_at, p.tz)
    platform = p.dunning.mode == "notify" and pay.next_retry_at is not None
    # The hub's cadence ends with its window; the platform's own schedule with the platform.
    last = date.max if platform else start + timedelta(days=p.dunning.window_days)
    out = []
    for n, retry_day in schedule(pay, p):
        if retry_day in window and not pay.hard_decline:
            out.append(Due(rule=RETRY, occasion=f"{pay.ref}/retry-{n}"[:120],
                           name="Payment Retry Scheduled",
                           properties={**pay.properties(), "attempt": n, "retry_on": retry_day.isoformat(),
                                       "mode": p.dunning.mode},
                           reason=(f"the platform's retry {n} due today" if platform
                                   else f"retry {n} of {len(p.dunning.retries())} due today"),
                           due_at=day_start(retry_day, p.tz)))
        for offset in p.dunning.reminder_offsets_days:
            day = retry_day + timedelta(days=offset)
            # The failure day itself is covered by Payment Failed.
            if day in window and start < day <= last:
                out.append(Due(rule=REMINDER, occasion=f"{pay.ref}/retry-{n}/{offset:+d}d"[:120],
                               name="Payment Reminder",
                               properties={**pay.properties(), "days_from_due": offset, "attempt": n,
                                           "due_on": retry_day.isoformat()},
                               reason=f"payment still unpaid; retry {n} due {retry_day.isoformat()}",
                               due_at=day_start(day, p.tz)))
    return out


def reminder_days(p: RuleParams) -> list[int]:
    """Days after the first failure on which something may fall due (for the sweep query)."""
    days = set(p.dunning.retries())
    days |= {d + o for d in p.dunning.retries() for o in p.dunning.reminder_offsets_days}
    return sorted(d for d in days if 0 < d <= p.dunning.window_days)
