"""`hub demo`: a simulated store feeding a running hub, against local stand-ins of the tools."""
from __future__ import annotations

from pathlib import Path

import click

from hub.demo.runner import DemoError, Options, run


@click.command("demo")
@click.option("--subscribers", default=300, show_default=True, type=click.IntRange(1, 100_000),
              help="Customers who subscribe over the simulated months.")
@click.option("--months", default=6, show_default=True, type=click.IntRange(1, 24),
              help="Simulated months (of 30 days), ending yesterday.")
@click.option("--seed", default=1, show_default=True, type=int, help="Same seed, same story.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--folder", default="hub-demo", show_default=True, type=click.Path(file_okay=False),
              help="Where the demo keeps its database, Redis and log (emptied first).")
@click.option("--exit", "exit_", is_flag=True, help="Stop once the login is printed (for scripts and tests).")
def command(subscribers, months, seed, host, port, folder, exit_):
    """A simulated store, end to end: signed webhooks in, stand-ins of the tools out."""

    options = Options(folder=Path(folder), subscribers=subscribers, months=months, seed=seed,
                      host=host, port=port)
    try:
        run(options, keep_serving=not exit_)
    except DemoError as exc:
        raise click.ClickException(str(exc)) from None
