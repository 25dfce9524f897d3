"""Trial Ending: 3 days before a trial ends."""
from __future__ import annotations

from datetime import datetime, timedelta

from hub.sync.rules.params import RuleParams
from hub.sync.rules.state import Due, SubState, Window, day_start, iso, local_day

RULE = "trial-ending"


def ending(sub: SubState, window: Window, now: datetime, p: RuleParams, notice: bool = False) -> list[Due]:
    """Trial Ending when its day is in the window; `notice` (the platform's own
    trial-will-end event) also takes any earlier day, as long as the trial is still on."""
    if sub.status != "trialing" or sub.trial_end is None or sub.trial_end <= now:
        return []
    end_day = local_day(sub.trial_end, p.tz)
    due_day = end_day - timedelta(days=p.trial.days_before)
    if not (due_day in window or (notice and due_day <= window.last)):
        return []
    return [Due(rule=RULE, occasion=f"{end_day.isoformat()}/{sub.ref}"[:120], name="Trial Ending",
                properties={"trial_end": iso(sub.trial_end), "days_before": p.trial.days_before,
                            **sub.properties()},
                reason=f"trial ends on {end_day.isoformat()}",
                due_at=day_start(due_day, p.tz))]
