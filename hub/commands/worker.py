"""`hub worker`: the RQ worker of the inbox, outbox, rule and slow-tool push queues (hub/queues.py
QUEUE_NAMES, in the order it takes jobs), with RQ cron beside it."""
from __future__ import annotations

import logging
import sys

import click
from redis import RedisError
from rq import Queue
from rq.exceptions import SchedulerNotFound

from hub import jobs
from hub.commands import announce_connectors, command_hub
from hub.context import use_hub
from hub.process import tune_gc
from hub.queues import QUEUE_NAMES
from hub.schedule import make_cron
from hub.supervise import Companion, die_with_parent

log = logging.getLogger("hub")


@click.command("worker")
@click.option("--cron/--no-cron", default=True, help="Also run RQ cron (run it on one worker only).")
@click.option("--burst", is_flag=True, help="Work until the queues are empty, then stop.")
def command(cron, burst):
    """RQ worker for the inbox, outbox and rule queues, with RQ cron."""
    hub = command_hub()
    use_hub(hub)
    announce_connectors(hub)
    tune_gc()
    # Rows stored while no worker ran (or Redis was down) are drained first.
    click.echo(f"drained at start: {jobs.backstop_job()}")
    cron_process = Companion("cron", _run_cron) if cron and not burst else None
    if cron_process is not None:
        cron_process.start()
    queues = [Queue(name, connection=hub.queues.connection) for name in QUEUE_NAMES]
    try:
        # On SIGTERM it finishes the job under way first (RQ's warm shutdown).
        jobs.Worker(queues, connection=hub.queues.connection).work(burst=burst, with_scheduler=True)
    finally:
        if cron_process is not None:
            cron_process.stop()


def _run_cron(worker_pid: int):
    die_with_parent(worker_pid)  # a worker killed outright takes its cron with it
    try:
        make_cron(command_hub().queues.connection).start()
    except (RedisError, OSError, SchedulerNotFound) as exc:
        # Redis went away (or came back empty): the worker starts a new cron after a pause.
        log.warning("cron stopped: %s", exc)
        sys.exit(1)
