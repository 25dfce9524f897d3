"""Win Back: 30 days after the subscriber's last subscription ended, unless one runs again."""
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

RULE, CANCELLED_RULE = "win-back", "subscription-cancelled"


def cancelled(sub: SubState, now: datetime, p: RuleParams, why: dict | None = None) -> Due | None:
    """Subscription Cancelled for an ended subscription, once per cancellation day; `why`
    holds cancellation_reason and churn_type (hub.sync.rules.moments.why_cancelled)."""
    if sub.is_live:
        return None
    at = sub.canceled_at or now
    return Due(rule=CANCELLED_RULE, occasion=f"{local_day(at, p.tz).isoformat()}/{sub.ref}"[:120],
               name="Subscription Cancelled",
               properties={"canceled_at": iso(at), **sub.properties(), **(why or {})},
               reason=f"subscription {sub.plan or sub.source_id} {sub.status}", due_at=at)


def win_back(s: SubscriberState, window: Window, p: RuleParams) -> list[Due]:
    """Win Back for the latest ended subscription whose day falls in the window; stored as
    skipped when a subscription runs again."""
    ended = [x for x in s.begun if not x.is_live and x.canceled_at]
    if not ended:
        return []
    last = max(ended, key=lambda x: (x.canceled_at, x.id))
    day = local_day(last.canceled_at, p.tz) + timedelta(days=p.winback.days_after_cancel)
    if day not in window:
        return []
    back = bool(s.live)
    return [Due(rule=RULE, occasion=f"{local_day(last.canceled_at, p.tz).isoformat()}/{last.ref}"[:120],
                name="Win Back", properties={"canceled_at": iso(last.canceled_at), **last.properties()},
                reason=(f"{p.winback.days_after_cancel} days since the subscription ended"
                        + ("; skipped: subscribed again" if back else "")),
                due_at=day_start(day, p.tz), status=SKIPPED if back else "fired")]
