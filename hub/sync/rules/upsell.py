"""Upsell Opportunity: heavy usage of the plan, or just after a renewal for happy subscribers.

Usage above 70 % of the plan limit over the last 14 days (reason "usage"), or within 7
days after a renewal for engaged and loyal subscribers (reason "renewal"); at most once
per billing cycle, whichever comes first.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from hub.sync.rules.params import RuleParams
from hub.sync.rules.state import Due, SubscriberState, SubState, iso, local_day
from hub.values import utc

RULE = "upsell"
AGGREGATES = {"sum": sum, "max": lambda values: max(values, default=0)}


def limit_of(sub: SubState, p: RuleParams) -> int | None:
    limits = p.upsell.plan_limits
    return sub.usage_limit or limits.get(sub.plan_id or "") or limits.get(sub.plan or "")


def usage_over_window(usage, now: datetime, p: RuleParams) -> float:
    since = now - timedelta(days=p.upsell.usage_window_days)
    values = [u.get("quantity") or 0 for u in usage if u.get("at") and since < utc(u["at"]) <= now]
    return AGGREGATES[p.upsell.usage_aggregate](values)


def _cycle(sub: SubState, p: RuleParams) -> str:
    start = sub.current_period_start or sub.started_at
    return f"{local_day(start, p.tz).isoformat() if start else 'first'}/{sub.ref}"[:120]


def _renewed_recently(sub: SubState, now: datetime, p: RuleParams) -> bool:
    start = sub.current_period_start
    if start is None or start > now or (sub.started_at and local_day(start, p.tz) <= local_day(sub.started_at, p.tz)):
        return False  # the first period is a start, not a renewal
    return now - start <= timedelta(days=p.upsell.after_renewal_days)


def opportunities(s: SubscriberState, stage: str, now: datetime, p: RuleParams) -> list[Due]:
    """One Upsell Opportunity per live subscription and billing cycle, when a reason holds."""
    out = []
    for sub in s.live:
        limit, used = limit_of(sub, p), usage_over_window(s.usage, now, p)
        if limit and used > p.upsell.usage_threshold * limit:
            extra = {"reason": "usage", "usage": used, "limit": limit, "percent": round(100 * used / limit)}
            why = f"used {used} of {limit} in the last {p.upsell.usage_window_days} days"
        elif sub.status == "active" and stage in p.upsell.after_renewal_stages and _renewed_recently(sub, now, p):
            extra = {"reason": "renewal", "renewed_at": iso(sub.current_period_start), "stage": stage}
            why = f"{stage} subscriber renewed on {local_day(sub.current_period_start, p.tz).isoformat()}"
        else:
            continue
        out.append(Due(rule=RULE, occasion=_cycle(sub, p), name="Upsell Opportunity",
                       properties={**extra, **sub.properties()}, reason=why, due_at=now))
    return out
