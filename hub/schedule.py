"""RQ cron: what runs on its own, and how often."""
from __future__ import annotations

from rq.cron import CronScheduler

from hub import jobs
from hub.config import Settings

# (function, queue, interval in seconds or cron expression)
SCHEDULE = (
    (jobs.backstop_job, "inbox", {"interval": jobs.BACKSTOP_INTERVAL_S}),
    (jobs.sweep_job, "default", {"cron": "*/15 * * * *"}),
    (jobs.dashboard_job, "default", {"interval": 300}),
    (jobs.registration_job, "default", {"interval": 3600}),
    # Daily, at night (UTC); HubSpot is read one person a call at 10/s: give it hours.
    (jobs.consent_job, "default", {"cron": "17 3 * * *", "job_timeout": 6 * 3600}),
)
# Alerts are looked for this often; each cause is sent at most once an hour (hub.ops.alerts).
ALERTS_INTERVAL_S = 300


def schedule(settings: Settings) -> tuple:
    """SCHEDULE plus the entries whose period is a setting (reconciliation)."""
    entries = SCHEDULE
    if settings.HUB_RECONCILE_INTERVAL > 0:
        # A pass polls every configured platform: give it room beyond RQ's 180 s default.
        entries += ((jobs.reconcile_job, "default",
                     {"interval": settings.HUB_RECONCILE_INTERVAL, "job_timeout": 1800}),)
    if settings.HUB_ALERT_WEBHOOK_URL:
        entries += ((jobs.alerts_job, "default", {"interval": ALERTS_INTERVAL_S}),)
    return entries


def make_cron(connection, settings: Settings | None = None) -> CronScheduler:
    """A CronScheduler with every entry of schedule(settings) registered."""
    cron = CronScheduler(connection=connection, name="hub-cron")
    for func, queue, when in schedule(settings or Settings.from_env()):
        cron.register(func, queue, result_ttl=0, **when)
    return cron
