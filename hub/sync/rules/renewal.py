"""Renewal reminders 30/14/7/1 days before the next renewal (upcoming shipment on Shopify).

Only offsets shorter than the billing interval apply. The occasion is the renewal date,
so a moved date gives new occasions; the reminders of the old date that had not fired
yet are recorded as cancelled (and reinstated if the date moves back).
"""
from __future__ import annotations

from datetime import date, datetime, timedelta

from hub.events import INFERRED_SOURCE
from hub.sync.rules.params import RuleParams
from hub.sync.rules.state import CANCELLED, Due, SubState, Window, day_start, local_day

PREFIX = "renewal-"


def rule(offset: int) -> str:
    return f"{PREFIX}{offset}d"


def is_reminder(rule_name: str) -> bool:
    """Whether a trigger's rule is a renewal reminder's (`renewal-14d`), not another rule
    that shares the prefix (Renewal Skipped's `renewal-skipped`, whose occasion is no day)."""
    offset = rule_name[len(PREFIX):-1]
    return rule_name.startswith(PREFIX) and rule_name.endswith("d") and offset.isdigit()


def occasion(renewal_day: date, sub: SubState) -> str:
    return f"{renewal_day.isoformat()}/{sub.ref}"[:120]


def offsets(sub: SubState, p: RuleParams) -> list[int]:
    interval = sub.interval_days
    return [d for d in p.renewal.offsets_days if d < interval]


def _reminder(sub: SubState, renewal_day: date, offset: int, p: RuleParams, status="fired",
              why: str = "") -> Due:
    kind = "shipment" if sub.source == "shopify" else "renewal"
    props = sub.properties()
    props.update(days_before=offset, renewal_date=renewal_day.isoformat(), kind=kind,
                 renewal_at=props["next_renewal_at"], amount=sub.next_charge)
    return Due(rule=rule(offset), occasion=occasion(renewal_day, sub), name="Renewal Reminder",
               properties=props,
               reason=why or f"{kind} on {renewal_day.isoformat()}, {offset} day{'s' if offset != 1 else ''} ahead",
               due_at=day_start(renewal_day - timedelta(days=offset), p.tz), status=status)


def resuming(sub: SubState) -> bool:
    """Paused until a resume date, with its next renewal the first one after the resume (the
    platform's normalizer aims next_renewal_at there): the paused cycles have no renewal."""
    return (sub.status == "paused" and sub.resumes_at is not None and sub.next_renewal_at is not None
            and sub.next_renewal_at >= sub.resumes_at)


def sweep_statuses(p: RuleParams) -> tuple[str, ...]:
    """Statuses the sweep reads: a paused subscription with a resume date is reminded as the
    active one it will be again."""
    return (*p.renewal.statuses, "paused") if "active" in p.renewal.statuses else tuple(p.renewal.statuses)


def reminders(sub: SubState, window: Window, now: datetime, p: RuleParams) -> list[Due]:
    """Reminders whose day falls in the window, while the renewal is still ahead.

    None for a subscription inferred from selling-plan orders: its date is an estimate, and the
    app that owns the subscription sends its own upcoming-order email on the real date.
    """
    status = "active" if resuming(sub) else sub.status
    if (status not in p.renewal.statuses or sub.cancel_at_period_end or sub.source == INFERRED_SOURCE
            or sub.next_renewal_at is None or sub.next_renewal_at <= now):
        return []
    renewal_day = local_day(sub.next_renewal_at, p.tz)
    return [_reminder(sub, renewal_day, d, p) for d in offsets(sub, p)
            if renewal_day - timedelta(days=d) in window]


def reconcile(sub: SubState, held: list[tuple[str, str, str]], now: datetime,
              p: RuleParams) -> tuple[list[Due], list[tuple[str, str]]]:
    """After a subscription changed: (reminders to record as cancelled, keys to reinstate).

    `held` is the subscriber's stored renewal triggers as (rule, occasion, status). A date
    whose sequence has started and is no longer the renewal date gets its remaining
    reminders cancelled; cancelled reminders of the current date are given back.
    """
    current = None
    if sub.is_live and sub.next_renewal_at and not sub.cancel_at_period_end:
        current = occasion(local_day(sub.next_renewal_at, p.tz), sub)
    today = local_day(now, p.tz)
    started = {occ for rule_, occ, status in held if status != CANCELLED}
    have = {(rule_, occ) for rule_, occ, _ in held}
    cancel = []
    for occ in sorted(started - {current}):
        day_text, _, ref = occ.partition("/")
        if ref != sub.ref:
            continue
        old_day = date.fromisoformat(day_text)
        for d in offsets(sub, p):
            due_day = old_day - timedelta(days=d)
            if due_day >= today and (rule(d), occ) not in have:
                why = ("subscription ended" if current is None
                       else f"renewal moved to {current.partition('/')[0]}")
                cancel.append(_reminder(sub, old_day, d, p, status=CANCELLED,
                                        why=f"reminder for {old_day.isoformat()} cancelled: {why}"))
    reinstate = [(r, occ) for r, occ, status in held if status == CANCELLED and occ == current]
    return cancel, reinstate
