"""`hub reconcile [--source NAME]`: one reconciliation pass now (RQ cron runs it every
HUB_RECONCILE_INTERVAL seconds): apply what the webhooks missed (hub/ops/reconcile.py)."""
from __future__ import annotations

import click

from hub.commands import SourceChoice, command_hub
from hub.ops import reconcile


@click.command("reconcile")
@click.option("--source", type=SourceChoice(), help="One source (default: every configured one).")
def command(source: str | None):
    """Poll each source for changes since the last run and apply what webhooks missed."""

    hub = command_hub(upgrade=True, check_rules=False)
    report = reconcile.run(hub, sources=[source] if source else None)
    if not report.sources:
        raise click.ClickException("no source is configured to reconcile")
    for one in report.sources:
        if one.error:
            click.echo(f"{one.source}: failed: {one.error}", err=True)
            continue
        checked = f", {one.checked:,} upcoming renewals read again" if one.checked else ""
        click.echo(f"{one.source}: {one.listed:,} changed since {one.since}, {one.known:,} already held"
                   f"{checked}, {one.stored:,} stored, {one.recovered:,} recovered by reconciliation")
    if any(one.error for one in report.sources):
        raise SystemExit(1)
