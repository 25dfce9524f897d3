"""The `hub` command: the group. Each command lives in its own module under hub/commands/."""
from __future__ import annotations

import click

from hub.commands import (
    backfill,
    consent,
    db,
    deliveries,
    demo,
    install,
    reconcile,
    replay,
    run,
    serve,
    sweep,
    user,
    worker,
)


@click.group()
def main():
    """Subscription lifecycle hub: webhooks in, lifecycle decisions, email/CRM tools out."""


for _module in (run, serve, worker, db, replay, sweep, deliveries, user, install, demo, backfill, reconcile, consent):
    main.add_command(_module.command)

if __name__ == "__main__":
    main()
