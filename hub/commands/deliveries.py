"""`hub deliveries retry --id N | --dead`: failed or dead-lettered deliveries sent again."""
from __future__ import annotations

import click

from hub.commands import command_hub, push_soon
from hub.sync import outbox


@click.group("deliveries")
def command():
    """Outbox deliveries to the connected tools."""


@command.command("retry")
@click.option("--id", "ids", multiple=True, type=int, help="Delivery id (repeatable).")
@click.option("--dead", is_flag=True, help="Every dead-lettered delivery.")
def retry(ids, dead):
    """Send failed or dead-lettered deliveries again."""

    if not ids and not dead:
        raise click.UsageError("name --id N (repeatable) or --dead")
    hub = command_hub()
    with hub.storage.session() as session:
        count = outbox.retry(session, delivery_ids=list(ids) or None, dead=dead)
    click.echo(f"{count} deliver{'y' if count == 1 else 'ies'} queued again")
    push_soon(hub)
