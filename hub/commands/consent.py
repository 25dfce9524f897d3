"""`hub consent check [--fix] [--tool NAME]`: compare each subscriber's marketing consent at
the source of truth with what Klaviyo, HubSpot and ActiveCampaign hold (hub/ops/consent.py);
a daily RQ cron job runs the same check. `--fix` pushes the source's consent, through the
outbox, to every tool that drifted."""
from __future__ import annotations

import time

import click

from hub.commands import command_hub
from hub.ops import consent

PROGRESS_EVERY_S = 2.0  # a line per tool at most this often on long runs


@click.group("consent")
def command():
    """Marketing consent held by the email and CRM tools."""


@command.command("check")
@click.option("--fix", is_flag=True, help="Push the source's consent to each tool that holds another.")
@click.option("--tool", "tools", multiple=True, type=click.Choice(["klaviyo", "hubspot", "activecampaign"]),
              help="Only this tool (repeatable; default: every connected tool that records consent).")
def check(fix: bool, tools: tuple[str, ...]):
    """Find the people whose consent a tool holds otherwise than the source of truth."""
    # Start-up cost: the tools' SDKs, which other commands do without.

    hub = command_hub(upgrade=True, check_rules=False)
    if not consent.tools_to_check(hub.settings):
        raise click.ClickException("no connected tool records consent (Klaviyo, or HubSpot with "
                                   "subscription_id, or ActiveCampaign with list_id in mappings/)")
    shown: dict[str, float] = {}

    def progress(tool: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - shown.get(tool, 0.0) < PROGRESS_EVERY_S and done != total:
            return
        shown[tool] = now
        of = f" of {total:,}" if total else ""
        click.echo(f"{tool}: {done:,}{of} read…", err=True)

    report = consent.run(hub, fix=fix, tools=list(tools) or None, progress=progress)
    for one in report.tools:
        if one.error:
            click.echo(f"{one.connector}: failed: {one.error}", err=True)
            continue
        line = (f"{one.connector}: {one.checked:,} people checked, {one.drifted:,} drifted, "
                f"{one.still_subscribed:,} still subscribed after the source withdrew")
        if fix:
            line += f", {one.fixed:,} consent updates queued"
        click.echo(line)
    if report.drifted and not fix:
        click.echo("The sync log lists them; `hub consent check --fix` pushes the source's consent.")
    if any(one.error for one in report.tools):
        raise SystemExit(1)
