"""`hub serve`: the web server (webhooks, API, sync log pages) on granian or gunicorn."""
from __future__ import annotations

import os

import click
from granian import Granian
from granian.constants import Interfaces
from granian.http import HTTP1Settings
from gunicorn.app.base import BaseApplication

from hub.commands import command_hub
from hub.supervise import WEB_STOP_TIMEOUT

SERVERS = ("granian", "gunicorn")


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int,
              help="Web processes (more on a machine with cores to spare).")
# One thread: Python threads of one process take turns on the interpreter lock, and on
# granian each thread added costs more CPU per webhook than it saves. Pages share the thread;
# they answer in milliseconds. On granian the thread runs only complete requests: bodies are
# awaited beside it (hub/rsgi.py).
@click.option("--threads", default=1, show_default=True, type=int, help="Threads per web process.")
@click.option("--server", type=click.Choice(SERVERS), default="granian", show_default=True,
              help="HTTP server: granian (Rust, keep-alive) or gunicorn (sync workers).")
@click.option("--upgrade/--no-upgrade", default=True, help="Apply database migrations first.")
def command(host, port, workers, threads, server, upgrade):
    """The web server: webhooks, API, sync log pages (hub.wsgi:app)."""
    hub = command_hub()
    if upgrade:
        hub.storage.upgrade()
    hub.storage.dispose()  # each web process opens its own connections
    if server == "granian":
        _serve_granian(host, port, workers, threads, hub.settings.HUB_REQUEST_READ_TIMEOUT)
    else:
        _serve_gunicorn(host, port, workers, threads)


def _serve_granian(host: str, port: int, workers: int, threads: int, read_timeout: int) -> None:
    # granian parses HTTP in Rust and keeps connections alive: per webhook it costs less CPU
    # than gunicorn's sync workers (benchmarks/RESULTS.md), CPU the drain needs.
    # Its RSGI interface, not WSGI: a request reaches Python only once its body is in, within
    # read_timeout (hub/rsgi.py says why), and hyper closes a connection whose headers take longer.
    os.environ["HUB_WEB_THREADS"] = str(threads)  # read by hub.rsgi in each web process
    Granian("hub.rsgi:app", address=host, port=port, interface=Interfaces.RSGI, workers=workers,
            http1_settings=HTTP1Settings(header_read_timeout=read_timeout * 1000),
            websockets=False, log_access=False, workers_kill_timeout=WEB_STOP_TIMEOUT - 5).serve()


def _serve_gunicorn(host: str, port: int, workers: int, threads: int) -> None:
    class Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            # With threads, webhooks arriving together share one commit (InboxWriter).
            self.cfg.set("threads", threads)
            self.cfg.set("accesslog", None)
            self.cfg.set("graceful_timeout", 10)

        def load(self):
            # Loaded in each web process gunicorn forks, after its configuration: the app
            # reads the environment and opens its database there.
            from hub.wsgi import app  # noqa: PLC0415 - it builds the app, in the process gunicorn forked

            return app

    Server().run()
