"""`hub sweep [--at ISO-8601]`: every time rule run as of an instant (RQ cron runs it every 15 minutes)."""
from __future__ import annotations

from datetime import datetime, timezone

import click

from hub.commands import command_hub, push_soon
from hub.jobs import run_time_rules
from hub.values import utc


@click.command("sweep")
@click.option("--at", "at", default=None, help="ISO-8601 instant (default: now).")
def command(at):
    """Run every time rule as of an instant."""

    hub = command_hub()
    try:
        now = utc(at) if at else datetime.now(timezone.utc)
    except ValueError:
        raise click.BadParameter(f"not an ISO-8601 instant: {at!r}", param_hint="--at") from None
    counts = run_time_rules(hub, now)
    click.echo(f"sweep at {now.isoformat()}: {sum(counts.values())} trigger(s)")
    for name, n in sorted(counts.items()):
        if n:
            click.echo(f"  {name}: {n}")
    push_soon(hub)
