"""Subscription Started, and the welcome sequence: day 0, 2 and 5 after the first subscription.

Step 1 fires when the first subscription arrives (event); later steps fire from the
sweep and are stored as skipped, never sent, if the subscriber churned meanwhile.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from hub.sync.rules.params import RuleParams
from hub.sync.rules.state import (
    SKIPPED,
    Due,
    SubscriberState,
    SubState,
    Window,
    day_start,
    iso,
    local_day,
)

STARTED = "subscription-started"

# Once per person: the occasion is the same whichever subscription turns out first.
OCCASION = "first-subscription"


def started(sub: SubState) -> Due:
    """Subscription Started, once per subscription."""
    at = sub.started_at
    return Due(rule=STARTED, occasion=sub.ref[:120], name="Subscription Started",
               properties={"started_at": iso(at), "trial_end": iso(sub.trial_end), **sub.properties()},
               reason=f"new {sub.status} subscription {sub.plan or sub.source_id}", due_at=at)


def rule(day: int) -> str:
    return f"welcome-{day}d"


def _step(s: SubscriberState, index: int, day: int, due_at: datetime) -> Due:
    first = s.first_subscription
    churned = not s.live
    return Due(rule=rule(day), occasion=OCCASION, name="Welcome Step",
               properties={"step": index + 1, "day": day, **first.properties(),
                           "started_at": iso(first.started_at)},
               reason=(f"welcome step {index + 1}, day {day} after the first subscription"
                       + ("; skipped: no subscription running any more" if churned else "")),
               due_at=due_at, status=SKIPPED if churned else "fired")


def first_step(s: SubscriberState, subscription_ref: str, p: RuleParams) -> Due | None:
    """Step 1, when `subscription_ref` is the subscriber's first subscription."""
    first = s.first_subscription
    if first is None or first.ref != subscription_ref:
        return None
    return _step(s, 0, 0, first.started_at)


def later_steps(s: SubscriberState, window: Window, p: RuleParams) -> list[Due]:
    """Steps after day 0 whose day falls in the window."""
    first = s.first_subscription
    if first is None:
        return []
    start = local_day(first.started_at, p.tz)
    out = []
    for index, day in enumerate(p.welcome.days):
        when = start + timedelta(days=day)
        if day > 0 and when in window:
            out.append(_step(s, index, day, day_start(when, p.tz)))
    return out
