"""`hub install`: one line per tool. `--check` only reports (ok / what is wrong / how to fix it);
without it the hub also registers what each tool needs, and a second run says "no change".
What is checked and registered, tool by tool: hub/ops/registrations.py.
"""
from __future__ import annotations

import click

from hub.config import Settings
from hub.db.engine import Storage
from hub.ops import registrations
from hub.sync import compliance


def _forget_uninstall(settings) -> None:

    storage = Storage(settings.DATABASE_URL)
    try:
        with storage.session() as session:
            compliance.clear_uninstalled(session)
    finally:
        storage.dispose()


@click.command("install")
@click.option("--check", "check_only", is_flag=True, help="Only report on each tool; change nothing.")
@click.option("--reinstalled", is_flag=True,
              help="The Shopify app was installed again after app/uninstalled: resume Shopify calls.")
def command(check_only, reinstalled):
    """Check every credential and register the hub's webhooks, properties and fields."""
    # Start-up cost: the platforms' and tools' SDKs (Stripe, Klaviyo, HubSpot), which every
    # other command of `hub` would otherwise load too.

    settings = Settings.from_env()
    if reinstalled:
        _forget_uninstall(settings)
        click.echo("Shopify calls resume: contracts whose webhooks came while the app was uninstalled "
                   "are read whole by the next reconciliation pass (`hub reconcile --source shopify` "
                   "runs one now)")
    results = registrations.check_all(settings) if check_only else registrations.install_all(settings)
    for result in results:
        click.echo(result.line())
    if any(r.status == registrations.WRONG for r in results):
        raise SystemExit(1)
