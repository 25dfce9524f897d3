"""`hub db upgrade`: apply the database migrations not applied yet."""
from __future__ import annotations

import click

from hub.commands import command_hub


@click.group("db")
def command():
    """Database schema."""


@command.command("upgrade")
def upgrade():
    """Apply every migration not applied yet."""
    command_hub().storage.upgrade()
    click.echo("database is up to date")
