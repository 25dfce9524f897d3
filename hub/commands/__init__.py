"""The commands of `hub`, one module each; every module defines one click command or group
named `command`, and hub.cli adds them to the group.

What several commands share lives here: the hub a command opens, and what it says at start.
"""
from __future__ import annotations

import click

from hub.context import Hub, make_hub
from hub.errors import ConfigError
from hub.sync import rules


def command_hub(*, upgrade: bool = False, check_rules: bool = True) -> Hub:
    """The hub of this command; its database connections close when the command ends.

    check_rules: rule parameters validated at start, so a bad mappings/rules.yaml stops `hub`
    here, with a message naming the key, rather than misfiring reminders later.
    upgrade: apply pending migrations first (commands a fresh install may run before any other).
    """
    hub = make_hub()
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(hub.storage.dispose)
    if check_rules:
        try:
            rules.configure(hub.settings)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
    if upgrade:
        hub.storage.upgrade()
    return hub


class SourceChoice(click.Choice):
    """`--source`: one of the platforms in webhooks.SOURCES, named when the option is read.

    Start-up cost: importing `webhooks` loads the platforms' SDKs (stripe, ShopifyAPI), which
    `hub --help` and every command that takes no `--source` do without."""

    def __init__(self):
        super().__init__(())

    @property
    def choices(self):
        from webhooks import SOURCE_NAMES  # noqa: PLC0415 - start-up cost, see the class docstring

        return SOURCE_NAMES

    @choices.setter
    def choices(self, _names) -> None:
        """click sets the names at construction; they are read from webhooks instead."""


def announce_connectors(hub: Hub) -> None:
    """One line per connector: on, or off and why."""
    try:
        # Start-up cost: the tools' SDKs, loaded only by the commands that announce them.
        from connectors import configured  # noqa: PLC0415
    except ImportError:
        return
    for name, on, why in configured(hub.settings):
        click.echo(f"  connector {name}: {'on' if on else 'off'}" + ("" if on else f" ({why})"))


def push_soon(hub: Hub) -> None:
    """Ask the worker to push what a command planned; if Redis is unreachable, it does later."""
    # Start-up cost: RQ and the outbox (every connector's SDK), for the commands that plan pushes.
    from hub.jobs import request_pushes  # noqa: PLC0415

    try:
        request_pushes(hub)
    except Exception as exc:  # the worker's one-minute backstop pushes later
        click.echo(f"note: could not enqueue pushes now ({exc}); the worker will")
