"""`hub backfill [--source shopify|stripe|chargebee|recharge] [--since DATE] [--restart]`.

Imports existing customers, subscriptions, orders and invoices through the platforms'
paginated APIs and the same inbox, normalizers and model as webhooks (hub/ops/backfill.py).
Resumable: Ctrl-C or a crash keeps the last stored page's cursor, and running the
command again continues from there.
"""
from __future__ import annotations

import sys
from datetime import datetime, timezone

import click

from hub.commands import SourceChoice, command_hub
from hub.ops import backfill


@click.command("backfill")
@click.option("--source", type=SourceChoice(), help="One source (default: every configured one).")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="Only objects created (Stripe) or updated (Shopify, Chargebee, Recharge) since this UTC date.")
@click.option("--restart", is_flag=True, help="Start over instead of continuing the last run.")
def command(source: str | None, since: datetime | None, restart: bool):
    """Import existing customers, subscriptions, orders and invoices (resumable)."""

    hub = command_hub(upgrade=True, check_rules=False)
    names = [source] if source else backfill.configured(hub.settings)
    if not names:
        raise click.ClickException("no source is configured: set SHOPIFY_SHOP + SHOPIFY_ACCESS_TOKEN, "
                                   "STRIPE_API_KEY, CHARGEBEE_SITE + CHARGEBEE_API_KEY, or RECHARGE_API_KEY")
    since = since.replace(tzinfo=timezone.utc) if since else None
    progress = backfill.Progress(out=sys.stderr)
    failed = False
    for name in names:
        try:
            report = backfill.run(hub, name, since=since, restart=restart, progress=progress)
        except KeyboardInterrupt:
            progress.note(f"{name}: interrupted; run `hub backfill --source {name}` again to continue "
                          "from the last stored page")
            raise SystemExit(130)
        except ValueError as exc:
            click.echo(f"{name}: {exc}", err=True)
            failed = True
            continue
        click.echo(summary(report))
    if failed:
        raise SystemExit(1)


def summary(report) -> str:
    """One line per source: what was listed, stored, and how long it took."""
    if report.finished and report.seconds == 0 and not report.stored:
        return (f"{report.source}: already backfilled ({sum(report.counts.values()):,} objects); "
                "`--restart` imports again (only changed objects are stored)")
    listed = ", ".join(f"{n:,} {stream}" for stream, n in report.counts.items())
    drained = ", ".join(f"{n:,} {status}" for status, n in report.drained.items() if n)
    rate = sum(report.counts.values()) / report.seconds if report.seconds else 0
    return (f"{report.source}: {listed}; {report.stored:,} new inbox rows ({drained or 'none drained'}); "
            f"{report.pages:,} pages in {report.seconds:,.1f} s ({rate:,.0f} objects/s"
            f"{', resumed' if report.resumed else ''}; {report.waited:,.1f} s waiting for rate limits)"
            + (f". {report.limit}." if report.limit else ""))
