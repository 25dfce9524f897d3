"""The `hub` command."""
from __future__ import annotations

import logging
import os
import signal
import sys

import click

from hub import make_hub
from hub.queues import PUSH_JOB_TIMEOUT, EmbeddedRedis, embedded_redis_path
from hub.supervise import Child, Companion, Supervisor, die_with_parent, port_free
from webhooks import webhook_secrets

log = logging.getLogger("hub")


@click.group()
def main():
    """Subscription lifecycle hub: webhooks in, lifecycle decisions, email/CRM tools out."""


def _hub():
    """The hub of this command; its database connections close when the command ends."""
    hub = make_hub()
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(hub.storage.dispose)
    _configure_rules(hub)
    return hub


def _configure_rules(hub) -> None:
    """Rule parameters validated at start: a bad mappings/rules.yaml stops `hub` here, with
    a message naming the key, rather than misfiring reminders later."""
    from hub.errors import ConfigError
    from hub.sync import rules

    try:
        rules.configure(hub.settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _announce_connectors(hub) -> None:
    try:
        from connectors import configured
    except ImportError:
        return
    for name, on, why in configured(hub.settings):
        click.echo(f"  connector {name}: {'on' if on else 'off'}" + ("" if on else f" ({why})"))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="Web processes.")
def run(host, port, workers):
    """Web server, worker and cron, supervised: one that dies is restarted, the rest keep serving."""
    if not port_free(host, port):
        # Checked here: the supervisor would otherwise restart a web server that cannot listen.
        raise click.ClickException(f"port {port} is in use; pick another with --port")
    hub = _hub()
    hub.storage.upgrade()
    env = dict(os.environ, DATABASE_URL=hub.settings.DATABASE_URL)
    children = []
    embedded = None
    if not hub.settings.REDIS_URL:
        embedded = EmbeddedRedis(embedded_redis_path(hub.settings.DATABASE_URL))
        env["REDIS_URL"] = embedded.url
        children.append(Child("redis-server", embedded.command(), service=True))
        click.echo(f"embedded Redis at {embedded.socket}")
    python = [sys.executable, "-m", "hub.cli"]
    children += [
        Child("web", python + ["serve", "--host", host, "--port", str(port), "--workers", str(workers),
                               "--no-upgrade"], stop_timeout=WEB_STOP_TIMEOUT),
        # SIGTERM is RQ's warm shutdown: a push under way is finished, never cut (it can last
        # PUSH_JOB_TIMEOUT before RQ itself stops it).
        Child("worker", python + ["worker"], stop_timeout=PUSH_JOB_TIMEOUT + 10),
    ]
    supervisor = Supervisor(children, env)
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        supervisor.start()
        click.echo(f"hub running on http://{host}:{port}  (Ctrl-C stops it)")
        _announce_connectors(hub)
        _announce_webhook_secrets(hub)
        _announce_staff(hub, f"http://{host}:{port}/sync-log")
        supervisor.watch(lambda: stopping)
    finally:
        click.echo("stopping: web first, then the worker (a job under way is finished), then Redis")
        supervisor.stop()
        if embedded is not None:
            embedded.cleanup()
    click.echo("hub stopped")


def _announce_webhook_secrets(hub) -> None:
    for source, missing in webhook_secrets(hub.settings):
        if missing:
            click.echo(f"  webhooks {source}: not configured: set {' and '.join(missing)} "
                       "(until then its webhooks are refused with 401)")
        else:
            click.echo(f"  webhooks {source}: configured")


def _announce_staff(hub, sync_log_url: str) -> None:
    from sqlalchemy import func, select

    from hub.models import StaffUser

    with hub.storage.session() as session:
        if session.scalar(select(func.count()).select_from(StaffUser)):
            return
    click.echo(f"no staff user yet: to sign in at {sync_log_url}, run (in another terminal, same folder):\n"
               "    hub user add you@example.com --role operator")


SERVERS = ("granian", "gunicorn")
WEB_STOP_TIMEOUT = 15  # granian gives its workers 10 s (workers_kill_timeout)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int,
              help="Web processes (one takes ~5,000 webhooks/s; more on a machine with cores to spare).")
# One thread: Python threads of one process take turns on the interpreter lock, and on
# granian that costs more than it saves (~200 µs of CPU per webhook with one thread, ~320
# with four; README, Throughput). Pages share the thread; they answer in milliseconds. On
# granian the thread runs only complete requests: bodies are awaited beside it (hub/rsgi.py).
@click.option("--threads", default=1, show_default=True, type=int, help="Threads per web process.")
@click.option("--server", type=click.Choice(SERVERS), default="granian", show_default=True,
              help="HTTP server: granian (Rust, keep-alive) or gunicorn (sync workers).")
@click.option("--upgrade/--no-upgrade", default=True, help="Apply database migrations first.")
def serve(host, port, workers, threads, server, upgrade):
    """The web server: webhooks, API, sync log pages (hub.wsgi:app)."""
    hub = _hub()
    if upgrade:
        hub.storage.upgrade()
    hub.storage.dispose()  # each web process opens its own connections
    if server == "granian":
        _serve_granian(host, port, workers, threads, hub.settings.HUB_REQUEST_READ_TIMEOUT)
    else:
        _serve_gunicorn(host, port, workers, threads)


def _serve_granian(host: str, port: int, workers: int, threads: int, read_timeout: int) -> None:
    # granian parses HTTP in Rust and keeps connections alive: per webhook it costs about
    # half the CPU of gunicorn's sync workers (benchmarks/RESULTS.md), CPU the drain needs.
    # Its RSGI interface, not WSGI: a request reaches Python only once its body is in, within
    # read_timeout (hub/rsgi.py says why), and hyper closes a connection whose headers take longer.
    from granian import Granian
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings

    os.environ["HUB_WEB_THREADS"] = str(threads)  # read by hub.rsgi in each web process
    Granian("hub.rsgi:app", address=host, port=port, interface=Interfaces.RSGI, workers=workers,
            http1_settings=HTTP1Settings(header_read_timeout=read_timeout * 1000),
            websockets=False, log_access=False, workers_kill_timeout=WEB_STOP_TIMEOUT - 5).serve()


def _serve_gunicorn(host: str, port: int, workers: int, threads: int) -> None:
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            # With threads, webhooks arriving together share one commit (InboxWriter).
            self.cfg.set("threads", threads)
            self.cfg.set("accesslog", None)
            self.cfg.set("graceful_timeout", 10)

        def load(self):
            from hub.wsgi import app

            return app

    Server().run()


@main.command()
@click.option("--cron/--no-cron", default=True, help="Also run RQ cron (run it on one worker only).")
@click.option("--burst", is_flag=True, help="Work until the queues are empty, then stop.")
def worker(cron, burst):
    """RQ worker for the inbox, outbox and rule queues, with RQ cron."""
    from rq import Queue

    from hub import jobs
    from hub.process import tune_gc
    from hub.queues import QUEUE_NAMES

    hub = _hub()
    jobs.use(hub)
    _announce_connectors(hub)
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
    from redis import RedisError
    from rq.exceptions import SchedulerNotFound

    from hub.schedule import make_cron

    die_with_parent(worker_pid)  # a worker killed outright takes its cron with it
    try:
        make_cron(_hub().queues.connection).start()
    except (RedisError, OSError, SchedulerNotFound) as exc:
        # Redis went away (or came back empty): the worker starts a new cron after a pause.
        log.warning("cron stopped: %s", exc)
        sys.exit(1)


@main.group()
def db():
    """Database schema."""


@db.command("upgrade")
def db_upgrade():
    """Apply every migration not applied yet."""
    _hub().storage.upgrade()
    click.echo("database is up to date")


@main.command()
@click.option("--event", "event_ids", multiple=True, help="Inbox row id or platform event id.")
@click.option("--failed", is_flag=True, help="Every event whose processing failed.")
def replay(event_ids, failed):
    """Process stored events again through the same code path."""
    from sqlalchemy import or_, select

    from hub.models import FAILED, InboxEvent, Subscriber
    from hub.sync.inbox import after_batch
    from hub.sync.inbox import replay as replay_row
    from hub.web.synclog import replay_message

    if not event_ids and not failed:
        raise click.UsageError("name --event ID (repeatable) or --failed")
    hub = _hub()
    with hub.storage.session() as session:
        query = select(InboxEvent)
        if failed:
            query = query.where(InboxEvent.is_open(), InboxEvent.status == FAILED)
        else:
            ids = [int(e) for e in event_ids if e.isdigit()]
            query = query.where(or_(InboxEvent.id.in_(ids), InboxEvent.event_id.in_(event_ids)))
        rows = list(session.scalars(query.order_by(InboxEvent.id)))
        if not rows:
            raise click.ClickException("no stored event matches")
        for row in rows:
            before = row.status
            latest = replay_row(session, row, hub.settings)
            owner = session.get(Subscriber, row.subscriber_id) if row.subscriber_id else None
            said = replay_message(row.id, before, latest, row.status, row.error, owner.currency if owner else None)
            click.echo(f"{row.source} {row.topic}: {row.status} — {said}")
        after_batch(session, hub.settings)  # the profile updates the replayed rows planned
    _push_soon(hub)


@main.command()
@click.option("--at", "at", default=None, help="ISO-8601 instant (default: now).")
def sweep(at):
    """Run every time rule as of an instant."""
    from datetime import datetime, timezone

    from hub.jobs import run_time_rules
    from hub.values import utc

    hub = _hub()
    try:
        now = utc(at) if at else datetime.now(timezone.utc)
    except ValueError:
        raise click.BadParameter(f"not an ISO-8601 instant: {at!r}", param_hint="--at") from None
    counts = run_time_rules(hub, now)
    click.echo(f"sweep at {now.isoformat()}: {sum(counts.values())} trigger(s)")
    for name, n in sorted(counts.items()):
        if n:
            click.echo(f"  {name}: {n}")
    _push_soon(hub)


def _push_soon(hub) -> None:
    from hub.jobs import request_pushes

    try:
        request_pushes(hub)
    except Exception as exc:  # the worker's one-minute backstop pushes later
        click.echo(f"note: could not enqueue pushes now ({exc}); the worker will")


@main.group()
def deliveries():
    """Outbox deliveries to the connected tools."""


@deliveries.command("retry")
@click.option("--id", "ids", multiple=True, type=int, help="Delivery id (repeatable).")
@click.option("--dead", is_flag=True, help="Every dead-lettered delivery.")
def deliveries_retry(ids, dead):
    """Send failed or dead-lettered deliveries again."""
    from hub.sync import outbox

    if not ids and not dead:
        raise click.UsageError("name --id N (repeatable) or --dead")
    hub = _hub()
    with hub.storage.session() as session:
        count = outbox.retry(session, delivery_ids=list(ids) or None, dead=dead)
    click.echo(f"{count} deliver{'y' if count == 1 else 'ies'} queued again")
    _push_soon(hub)


def _add_area_commands() -> None:
    from importlib import import_module

    from hub.commands import COMMANDS

    for name in COMMANDS:
        main.add_command(import_module(f"hub.commands.{name}").command)


_add_area_commands()

if __name__ == "__main__":
    main()
