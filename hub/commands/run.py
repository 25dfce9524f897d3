"""`hub run`: web server, worker and cron on one machine, each restarted when it dies (hub/supervise.py)."""
from __future__ import annotations

import os
import signal
import sys

import click
from sqlalchemy import func, select

from hub.commands import announce_connectors, command_hub
from hub.models import StaffUser
from hub.queues import PUSH_JOB_TIMEOUT, EmbeddedRedis, embedded_redis_path
from hub.supervise import WEB_STOP_TIMEOUT, Child, Supervisor, port_free


@click.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="Web processes.")
@click.option("--worker-processes", default=1, show_default=True, type=click.IntRange(min=0),
              help="`hub worker` processes (the first also runs cron; 0: another host runs them).")
@click.option("--database-url", default=None, help="DATABASE_URL for every process (e.g. PostgreSQL).")
@click.option("--redis-url", default=None, help="REDIS_URL for every process (a shared Redis server).")
@click.option("--cron/--no-cron", default=True, help="Run RQ cron here (on one host only).")
def command(host, port, workers, worker_processes, database_url, redis_url, cron):
    """Web server, workers and cron, supervised: one that dies is restarted, the rest keep serving."""
    if not port_free(host, port):
        # Checked here: the supervisor would otherwise restart a web server that cannot listen.
        raise click.ClickException(f"port {port} is in use; pick another with --port")
    # Given here, they are the settings of this command and of every child it starts.
    os.environ.update({k: v for k, v in (("DATABASE_URL", database_url), ("REDIS_URL", redis_url)) if v})
    hub = command_hub()
    hub.storage.upgrade()
    env = dict(os.environ, DATABASE_URL=hub.settings.DATABASE_URL)
    children = []
    embedded = None
    if not hub.settings.REDIS_URL:
        embedded = EmbeddedRedis(embedded_redis_path(hub.settings.DATABASE_URL))
        env["REDIS_URL"] = embedded.url
        children.append(Child("redis-server", embedded.command(), service=True))
        click.echo(f"embedded Redis at {embedded.socket}")
    children += stack(host, port, workers, worker_processes, cron)
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
        announce_connectors(hub)
        _announce_webhook_secrets(hub)
        _announce_staff(hub, f"http://{host}:{port}/sync-log")
        supervisor.watch(lambda: stopping)
    finally:
        click.echo("stopping: web first, then the worker (a job under way is finished), then Redis")
        supervisor.stop()
        if embedded is not None:
            embedded.cleanup()
    click.echo("hub stopped")


def stack(host: str, port: int, web_processes: int, worker_processes: int, cron: bool) -> list[Child]:
    """The web server and `worker_processes` workers, cron on the first one only when `cron`."""
    python = [sys.executable, "-m", "hub.cli"]
    children = [Child("web", python + ["serve", "--host", host, "--port", str(port), "--workers",
                                       str(web_processes), "--no-upgrade"], stop_timeout=WEB_STOP_TIMEOUT)]
    for number in range(worker_processes):
        # SIGTERM is RQ's warm shutdown: a push under way is finished, never cut (it can last
        # PUSH_JOB_TIMEOUT before RQ itself stops it).
        name = "worker" if number == 0 else f"worker {number + 1}"
        with_cron = [] if cron and number == 0 else ["--no-cron"]
        children.append(Child(name, python + ["worker", *with_cron], stop_timeout=PUSH_JOB_TIMEOUT + 10))
    return children


def _announce_webhook_secrets(hub) -> None:
    from webhooks import webhook_secrets  # noqa: PLC0415 - start-up cost: the platforms' SDKs

    for source, missing in webhook_secrets(hub.settings):
        if missing:
            click.echo(f"  webhooks {source}: not configured: set {' and '.join(missing)} "
                       "(until then its webhooks are refused with 401)")
        else:
            click.echo(f"  webhooks {source}: configured")


def _announce_staff(hub, sync_log_url: str) -> None:
    with hub.storage.session() as session:
        if session.scalar(select(func.count()).select_from(StaffUser)):
            return
    click.echo(f"no staff user yet: to sign in at {sync_log_url}, run (in another terminal, same folder):\n"
               "    hub user add you@example.com --role operator")
