"""Lifecycle stage and health score from recency, frequency, tenure and payment health.

Both are piecewise constant in time: with no new data they change only on the days in
`Lifecycle.boundaries()`, which is how the daily sweep finds whom to recompute.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from hub.sync.rules.params import RuleParams
from hub.sync.rules.state import Due, SubscriberState, ago, days_between, local_day


@dataclass(frozen=True)
class Facts:
    """What the stage and score are computed from, in whole shop-calendar days."""

    inactive_days: int             # since the last order or payment (or first seen)
    ordered: bool                  # any order ever (wording of reasons)
    tenure_days: int | None        # since the first subscription or order
    anchor_kind: str               # "subscription", "order" or "sign-up"
    paid: int                      # paid orders or invoices
    running: bool                  # a live, unpaused subscription
    had_subscription: bool
    live: bool
    failed_days: int | None        # since an open payment failure began
    cancel_on: date | None         # a scheduled cancellation takes effect
    ended_days: int | None         # since the last subscription ended


@dataclass(frozen=True)
class Assessment:
    stage: str
    reason: str
    health: int


def facts(s: SubscriberState, now: datetime, p: RuleParams) -> Facts:
    tz = p.tz
    first_sub = s.first_subscription
    anchors = [(a, k) for a, k in ((first_sub and first_sub.started_at, "subscription"),
                                   (s.first_order_at, "order")) if a]
    anchor, kind = min(anchors) if anchors else (s.first_seen_at, "sign-up")
    last = max((t for t in (s.last_activity_at, s.last_order_at, s.first_seen_at) if t), default=now)
    failures = [x.first_failed_at for x in s.payments if x.is_open]
    scheduled = [x for x in s.live if x.cancel_at_period_end]
    ended = [x.canceled_at for x in s.begun if not x.is_live and x.canceled_at]
    cancel_at = min((x.current_period_end or x.next_renewal_at or now for x in scheduled), default=None)
    return Facts(
        inactive_days=max(0, days_between(last, now, tz)),
        ordered=s.last_order_at is not None,
        tenure_days=max(0, days_between(anchor, now, tz)) if anchor else None,
        anchor_kind=kind,
        paid=max(s.orders_count, s.paid_payments),
        running=any(x.status != "paused" for x in s.live),
        had_subscription=bool(s.begun),
        live=bool(s.live),
        failed_days=max(0, days_between(min(failures), now, tz)) if failures else None,
        cancel_on=local_day(cancel_at, tz) if cancel_at else None,
        ended_days=max(0, days_between(max(ended), now, tz)) if ended else None,
    )


def _at_most(table: dict[int, int], value: int) -> int:
    """Points of the smallest bucket "at most N" holding value (0 beyond the last)."""
    return next((pts for limit, pts in sorted(table.items()) if value <= limit), 0)


def _at_least(table: dict[int, int], value: int | None) -> int:
    """Points of the largest bucket "at least N" reached (0 below the first)."""
    return max((pts for floor, pts in table.items() if value is not None and value >= floor), default=0)


def health(f: Facts, p: RuleParams) -> int:
    h = p.lifecycle.health
    # A running subscription is recent by definition until a payment fails.
    recency = max(h.recency.values()) if f.running else _at_most(h.recency, f.inactive_days)
    # Tenure points count from the first purchase; signing up alone earns none.
    tenure = f.tenure_days if f.anchor_kind != "sign-up" else None
    score = (recency + _at_least(h.frequency, f.paid) + _at_least(h.tenure, tenure)
             + (h.live_subscription if f.running else 0))
    score -= h.penalties.payment_failed if f.failed_days is not None else 0
    score -= h.penalties.cancel_scheduled if f.cancel_on else 0
    score -= h.penalties.churned if f.had_subscription and not f.live else 0
    return max(0, min(100, score))


def _silence(f: Facts) -> str:
    what = "order" if f.ordered else "activity"
    return f"no {what} in {f.inactive_days} days"


# First match wins: (stage, reason or None). Payment trouble outranks novelty on purpose.
STAGE_RULES = (
    ("churned", lambda f, p, h: (f"subscription ended {ago(f.ended_days or 0)}"
                                 if f.had_subscription and not f.live else None)),
    ("churned", lambda f, p, h: (_silence(f) if not f.had_subscription
                                 and f.inactive_days >= p.lifecycle.lapsed_days else None)),
    ("at_risk", lambda f, p, h: (f"payment failed {ago(f.failed_days)}"
                                 if f.failed_days is not None else None)),
    ("at_risk", lambda f, p, h: (f"cancellation scheduled for {f.cancel_on.isoformat()}"
                                 if f.cancel_on else None)),
    ("at_risk", lambda f, p, h: (_silence(f) if not f.running
                                 and f.inactive_days >= p.lifecycle.silence_days else None)),
    ("new", lambda f, p, h: (f"first {f.anchor_kind} {ago(f.tenure_days)}"
                             if f.tenure_days is not None and f.tenure_days < p.lifecycle.new_days else None)),
    ("loyal", lambda f, p, h: (f"customer for {f.tenure_days} days, {f.paid} paid orders, health {h}"
                               if f.anchor_kind != "sign-up" and (f.tenure_days or 0) >= p.lifecycle.loyal_days
                               and h >= p.lifecycle.loyal_min_health else None)),
    ("engaged", lambda f, p, h: ("subscription running" if f.running
                                 else f"last order {ago(f.inactive_days)}" if f.ordered
                                 else f"signed up {ago(f.inactive_days)}")),
)


def assess(s: SubscriberState, now: datetime, p: RuleParams) -> Assessment:
    """Stage, its reason and the health score as of `now`."""
    f = facts(s, now, p)
    score = health(f, p)
    for stage, reason_of in STAGE_RULES:
        reason = reason_of(f, p, score)
        if reason:
            return Assessment(stage, reason, score)
    raise AssertionError("the last stage rule always matches")


def reason_for(s: SubscriberState, stage: str, now: datetime, p: RuleParams) -> str | None:
    """Why `s` is in `stage` as of `now` ("first order 10 days ago"): the first of that
    stage's rules that holds, or None when none does any more (the next sweep moves it)."""
    f = facts(s, now, p)
    score = health(f, p)
    reasons = (reason_of(f, p, score) for held, reason_of in STAGE_RULES if held == stage)
    return next((reason for reason in reasons if reason), None)


def stage_changed(s: SubscriberState, a: Assessment, now: datetime) -> Due | None:
    """`Stage Changed` when the stage moves; the first stage a subscriber gets is not a move."""
    if s.stage is None or s.stage == a.stage:
        return None
    return Due(rule="stage", occasion=f"{s.stage}->{a.stage}/{now.isoformat(timespec='seconds')}",
               name="Stage Changed",
               properties={"from": s.stage, "to": a.stage, "reason": a.reason, "health_score": a.health},
               reason=f"{s.stage} → {a.stage}: {a.reason}", due_at=now)
