"""`hub run`: web server, worker and cron on one machine, each restarted when it dies (hub/supervise.py)."""
from __future__ import annotations

import os
import signal
import sys

import click
from sqlalchemy import func, select

from hub.commands import announce_connectors, command_hub
from hub.commands.serve import WEB_STOP_TIMEOUT
from hub.models import StaffUser
from hub.queues import PUSH_JOB_TIMEOUT, EmbeddedRedis, embedded_redis_path
from hub.supervise import Child, Supervisor, port_free


@click.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="Web processes.")
def command(host, port, workers):
    """Web server, worker and cron, supervised: one that dies is restarted, the rest keep serving."""
    if not port_free(host, port):
        # Checked here: the supervisor would otherwise restart a web server that cannot listen.
        raise click.ClickException(f"port {port} is in use; pick another with --port")
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
