"""RQ cron: what runs on its own, and how often."""
from __future__ import annotations

from rq.cron import CronScheduler

from hub import jobs

# (function, queue, interval in seconds or cron expression)
SCHEDULE = (
    (jobs.backstop_job, "inbox", {"interval": 60}),
    (jobs.sweep_job, "default", {"cron": "*/15 * * * *"}),
    (jobs.dashboard_job, "default", {"interval": 300}),
)


def make_cron(connection) -> CronScheduler:
    """A CronScheduler with every entry of SCHEDULE registered."""
    cron = CronScheduler(connection=connection, name="hub-cron")
    for func, queue, when in SCHEDULE:
        cron.register(func, queue, result_ttl=0, **when)
    return cron
