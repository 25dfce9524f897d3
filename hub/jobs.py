"""Thin RQ jobs: open the process's hub, call the core. Jobs take ids and small dicts only."""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone

from rq import SimpleWorker

from hub.context import Hub, current_hub
from hub.db.unit import UnitOfWork
from hub.errors import DrainerBusy
from hub.ops import alerts, consent, dashboard, reconcile
from hub.queues import SLOW_PUSH_QUEUE, queue_order
from hub.sync import inference, outbox, retries, rules
from hub.sync.inbox import drain_inbox, reopen_waiting
from hub.values import utc

log = logging.getLogger(__name__)


class Worker(SimpleWorker):
    """RQ's SimpleWorker (jobs run in this process: no fork per job, one database pool) whose
    warm shutdown takes a second, not a minute.

    RQ listens for commands on a pub/sub channel in a thread that waits up to `sleep_time`
    for a message, and stopping the worker waits for that thread. RQ asks for 60 s; when no
    subscription is live (as after Redis restarted) the whole wait is spent, so SIGTERM took a
    minute. A fifth of a second here, well inside the one second RQ's unsubscribe() waits for
    the thread before closing the pub/sub itself: the thread closes it too as it ends, and two
    closes at once race in redis-py 5.0 (PubSub.reset is not locked). Waking five times a
    second when idle costs nothing.
    """

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        # The queue order is looked at before each job, not once at start: see queue_order.
        self._ordered_queues = queue_order(self.queues, self.connection)
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def subscribe(self):
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=0.2, daemon=True, exception_handler=self._pubsub_exception_handler)


def drain_inbox_job() -> dict:
    """Drain the inbox until empty, then ask the outbox to push what it planned."""
    hub = current_hub()
    try:
        with hub.storage.drain_lock(wait=False):
            # Cleared before looking for rows: a webhook stored after this point sets the
            # flag again and enqueues another drain (see Queues.request_drain).
            hub.queues.clear_drain_request()
            # Pushes start while the drain goes on: under a steady stream of webhooks the
            # inbox is never empty, and deliveries must not wait for the stream to stop.
            counts = drain_inbox(hub.storage, hub.settings, linger_s=hub.settings.HUB_DRAIN_LINGER_MS / 1000,
                                 on_batch=lambda planned: request_pushes(hub, sorted(planned)))
    except DrainerBusy:
        # Another worker drains this SQLite inbox (one at a time: hub.storage.drain_lock).
        # This worker stays free for pushes; the flag stays set so webhooks enqueue no more
        # drains meanwhile, and one look a second later catches rows the other one missed.
        hub.queues.queue("inbox").enqueue_in(timedelta(seconds=1), "hub.jobs.drain_inbox_job",
                                             result_ttl=0)
        return {"busy": 1}
    if any(counts.values()):
        request_pushes(hub)
        if rules.current_params(hub.settings).dunning.mode == "orchestrate":
            # A new card's retry (hub.sync.retries), asked once the drain let go of the inbox.
            retries.ask_due(hub.storage, hub.settings)
    return counts


def request_pushes(hub: Hub, connectors=None) -> None:
    """Ask for one push job per enabled connector (or the ones named), unless one waits."""
    for name in connectors if connectors is not None else outbox.enabled_connectors(hub.settings):
        hub.queues.request_push(name)


# How long one push job goes on batch after batch before it yields its worker. A tool that
# always has rows due (HubSpot takes 10,000 contacts per 10 s) would otherwise keep the
# worker for the whole push budget while other tools' pushes wait behind it in the queue.
PUSH_SLICE_S = 1.0


def push_batch_job(connector: str, deferred: bool = False) -> dict:
    """Push due deliveries of one connector for a slice of time; then ask again, behind the
    other tools' pushes, while more are due, or for when its rate limit has a token again
    (`deferred`: this is that push). A push of the slow queue gives way between batches
    to any job waiting in the queues before it (hub/queues.py QUEUE_NAMES), and waits for
    its rate limit's window in place while no job waits at all (wait_for_window)."""
    hub = current_hub()
    # Cleared before looking for due rows: a delivery planned after this asks for a new job.
    hub.queues.clear_push_request(connector)
    if deferred:
        hub.queues.clear_deferred_push(connector)
    behind = hub.queues.push_queue(connector) == SLOW_PUSH_QUEUE
    result = outbox.push_batch(hub.storage, hub.settings, connector, redis=hub.queues.connection,
                               budget_seconds=PUSH_SLICE_S,
                               give_way=hub.queues.faster_work_waiting if behind else None,
                               wait_held=(lambda seconds: wait_for_window(hub, connector, seconds))
                               if behind else None)
    if result["waited"]:
        # Deliveries planned while it waited asked for no push: they may have come after
        # its last look, so the next push is asked for below whatever the outcome.
        hub.queues.clear_push_request(connector)
    if result["resume_in"]:
        # The tool's rate limit has no room now and other work waits for the worker: it
        # goes on with that, and this push comes back once the window has room.
        hub.queues.defer_push(connector, result["resume_in"])
    elif result["more"] or result["waited"]:
        # None if one is queued already: it finds these rows too.
        hub.queues.request_push(connector)
    else:
        hub.queues.caught_up(connector)
    return result


# A push held for longer (a 429's Retry-After, HubSpot's ten-second window) yields its
# worker and comes back through RQ's scheduler, whose times are whole seconds and which
# looks once a second: for ActiveCampaign's one-second window that round trip would cost
# more than the wait. Short too so a worker asked to stop is not kept waiting.
WAIT_IN_PLACE_MAX_S = 1.5
WAIT_STEP_S = 0.05  # how often a push waiting in place looks for other work


def wait_for_window(hub: Hub, connector: str, seconds: float) -> bool:
    """Sleep through `seconds` of `connector`'s rate-limit hold in place, while no job waits
    for a worker; False as soon as one does, or when the hold is too long to wait out here
    (the push then yields its worker). Meanwhile no other push of the tool is queued: this
    one claims what is planned as it goes on."""
    if seconds > WAIT_IN_PLACE_MAX_S:
        return False
    hub.queues.hold_push_request(connector, seconds)
    until = time.monotonic() + seconds
    looks_queued = 0
    while (left := until - time.monotonic()) > 0:
        # A job queued at two looks in a row waits for a worker: an idle one would have
        # taken it at once (it blocks on the queues), and then this push need not yield.
        looks_queued = looks_queued + 1 if hub.queues.work_waiting() else 0
        if looks_queued == 2:
            return False
        time.sleep(min(WAIT_STEP_S, left))
    return True


def run_time_rules(hub: Hub, now: datetime) -> dict:
    """Every time rule as of `now`, its triggers planned into the outbox; counts per rule."""
    with hub.storage.session() as session:
        lapsed = inference.lapse(session, now, hub.settings.SHOPIFY_INFERRED_GRACE_DAYS)
        report = rules.run_sweep(session, now, rules.current_params(hub.settings), hub.settings)
        outbox.plan_sweep(UnitOfWork(session), hub.settings, report.trigger_ids,
                          {*report.subscriber_ids, *lapsed})
    # Orchestrated retries the sweep planned, asked now that it is committed.
    retries.ask_due(hub.storage, hub.settings, now)
    return report.counts


def sweep_job(at: str | None = None) -> dict:
    """Run every time rule as of `at` (ISO-8601; default now)."""
    hub = current_hub()
    counts = run_time_rules(hub, utc(at) if at else datetime.now(timezone.utc))
    request_pushes(hub)
    return counts


BACKSTOP_INTERVAL_S = 60


def backstop_job() -> dict:
    """Every minute: open again the webhooks whose platform did not answer once their wait is
    over, drain rows a lost enqueue left behind, push what is due, ask for a push when each
    tool's next delivery falls due before the next backstop, and ask the platforms for
    orchestrated retries that are due again (hub.sync.retries)."""
    hub = current_hub()
    reopen_waiting(hub.storage)
    counts = drain_inbox_job()
    request_pushes(hub)
    push_when_due(hub, datetime.now(timezone.utc))
    # Retries a killed worker left unasked, or whose platform did not answer, when due.
    retries.ask_due(hub.storage, hub.settings)
    return counts


def push_when_due(hub: Hub, now: datetime) -> None:
    """A push at the time each tool's first delivery falls due before the next backstop.
    Nothing else asks for one then: a retry's backoff ending, the lease of a push whose
    worker was killed running out. Without it such a row would wait for the backstop after,
    up to a minute longer, when no new webhook brings a push."""
    until = now + timedelta(seconds=BACKSTOP_INTERVAL_S)
    for name, due in outbox.next_due_at(hub.storage, outbox.enabled_connectors(hub.settings), now, until).items():
        hub.queues.push_at_due(name, (due - now).total_seconds())


def dashboard_job() -> dict:
    """Bring the dashboard's running totals up to date with the inbox."""
    return dashboard.catch_up(current_hub().storage)


def reconcile_job(source: str | None = None) -> dict:
    """Poll the platforms for changes the webhooks missed and apply them (hub/ops/reconcile.py)."""
    hub = current_hub()
    report = reconcile.run(hub, sources=[source] if source else None)
    if report.recovered:
        request_pushes(hub)
    return {one.source: {"listed": one.listed, "checked": one.checked, "stored": one.stored,
                         "recovered": one.recovered, "error": one.error} for one in report.sources}


def alerts_job() -> dict:
    """Send the staff alerts that are due (HUB_ALERT_WEBHOOK_URL), each cause at most hourly."""
    hub = current_hub()
    return {"sent": alerts.run(hub.storage, hub.settings)}


def consent_job() -> dict:
    """The daily consent drift report (hub/ops/consent.py): read only, `hub consent check --fix` pushes."""
    report = consent.run(current_hub())
    return {one.connector: {"drifted": one.drifted, "still_subscribed": one.still_subscribed,
                            "error": one.error} for one in report.tools}


def registration_job() -> dict:
    """Check the sources still hold the hub's webhook registrations; the dashboard shows gaps."""
    # Start-up cost: the Stripe SDK and the platforms' clients, which web processes (they
    # import this module to request pushes) would otherwise load and never use.
    from hub.ops import registrations  # noqa: PLC0415

    hub = current_hub()
    problems = registrations.record_watch(hub.storage, hub.settings)
    for problem in problems:
        log.warning("webhook registration: %s: %s", problem["tool"], problem["message"])
    return {"problems": len(problems)}
