"""The `hub` command: the group. Each command lives in its own module under hub/commands/.

The group loads a command's module only when that command runs (or shows its own help), as
click documents for lazily loaded subcommands
(https://click.palletsprojects.com/en/stable/complex/#lazily-loading-subcommands): `hub --help`
answers from the one-line summaries below without importing SQLAlchemy, Redis or an SDK, and
each command module imports what it uses at its top.
"""
from __future__ import annotations

import importlib
import os

import click

# Command name → its one-line summary in `hub --help`. The module hub.commands.<name> defines
# `command`; tests/test_cli.py checks that each summary is the command's own.
COMMANDS = {
    "run": "Web server, workers and cron, supervised: one that dies is restarted, the rest keep serving.",
    "serve": "The web server: webhooks, API, sync log pages (hub.wsgi:app).",
    "worker": "RQ worker for the inbox, outbox and rule queues, with RQ cron.",
    "db": "Database schema.",
    "replay": "Process stored events again through the same code path; show what changed.",
    "sweep": "Run every time rule as of an instant.",
    "deliveries": "Outbox deliveries to the connected tools.",
    "user": "Staff accounts of the sync log pages (viewers read; operators also retry and replay).",
    "install": "Check every credential and register the hub's webhooks, properties and fields.",
    "demo": "A simulated store, end to end: signed webhooks in, stand-ins of the tools out.",
    "backfill": "Import existing customers, subscriptions, orders and invoices (resumable).",
    "reconcile": "Poll each source for changes since the last run and apply what webhooks missed.",
    "consent": "Marketing consent held by the email and CRM tools.",
}


class Commands(click.Group):
    """The commands of COMMANDS, each imported on first use."""

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx, cmd_name: str):
        if cmd_name not in COMMANDS:
            return None
        return importlib.import_module(f"hub.commands.{cmd_name}").command

    def format_commands(self, ctx, formatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl(list(COMMANDS.items()))


@click.group(cls=Commands)
@click.pass_context
def main(ctx):
    """Subscription lifecycle hub: webhooks in, lifecycle decisions, email/CRM tools out."""
    if ctx.invoked_subcommand:
        # PostgreSQL shows which hub process holds each connection (pg_stat_activity's
        # application_name): libpq takes it from PGAPPNAME, and every process a command starts
        # inherits it. Set per command, so `hub run`'s web server and workers name their own.
        os.environ["PGAPPNAME"] = f"hub {ctx.invoked_subcommand}"


if __name__ == "__main__":
    main()
