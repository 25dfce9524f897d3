"""Lifecycle moments of one subscription, read from what an event changed: why it ended
(Subscription Cancelled's reason and churn type), Plan Changed, Subscription Paused /
Resumed, Renewal Skipped; Renew Now before a scheduled end; Payment Method Updated.

Pure functions over the rule state, the canonical event and the model's recorded changes:
every amount is the platform's (the proration is what it billed or credited, never one the
hub works out).
"""
from __future__ import annotations

from hub import events as ev
from hub.sync.rules.state import OPEN_PAYMENT, SubscriberState, SubState


def why_cancelled(s: SubscriberState, sub: SubState, event) -> dict:
    """cancellation_reason (the platform's words) and churn_type: what the platform says,
    else involuntary when the subscription ended owing a failed payment (a platform that
    cancels after its retries, such as Recharge, names no machine-readable reason)."""
    d = event.data
    churn = d.get("churn_type")
    if churn not in ev.CHURN_TYPES:
        owing = any(x.subscription_source_id == sub.source_id and x.source == sub.source
                    and x.status in OPEN_PAYMENT for x in s.payments)
        churn = ev.INVOLUNTARY if owing else ev.VOLUNTARY
    why = {"cancellation_reason": d.get("cancellation_reason"), "churn_type": churn}
    if d.get("cancellation_comment"):
        why["cancellation_comment"] = d["cancellation_comment"]
    return why
