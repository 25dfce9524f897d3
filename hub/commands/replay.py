"""`hub replay`: stored events processed again, as the sync log's Replay does, with what
changed per subscriber; `--dry-run` shows it and keeps nothing."""
from __future__ import annotations

import click

from hub.commands import SourceChoice, command_hub, push_soon
from hub.errors import ConfigError
from hub.ops import replay
from hub.values import utc
from hub.web.synclog import diff_heading, diff_lines, replay_message

TIME = click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"])


@click.command("replay")
@click.option("--event", "event_ids", multiple=True, help="Inbox row id or platform event id.")
@click.option("--failed", is_flag=True, help="Every event whose processing failed.")
@click.option("--since", type=TIME, help="Events received at or after this time (UTC).")
@click.option("--until", type=TIME, help="Events received before this time (UTC).")
@click.option("--source", type=SourceChoice(), help="Only this platform's events.")
@click.option("--dry-run", is_flag=True, help="Show what would change; keep nothing.")
@click.option("--rules", "rules_file", type=click.Path(exists=True, dir_okay=False),
              help="Apply the rules of this rules.yaml instead of the configured one.")
def command(event_ids, failed, since, until, source, dry_run, rules_file):
    """Process stored events again through the same code path; show what changed.

    Per subscriber: fields, stage, triggers fired, deliveries planned."""

    if not (event_ids or failed or since or until or source or dry_run):
        # Replaying the whole history for real is never one slip of the keyboard away.
        raise click.UsageError("name --event ID (repeatable), --failed, or --since/--until/--source "
                               "(a --dry-run may name none: every stored event)")
    hub = command_hub()
    query = replay.select_events(since=utc(since), until=utc(until), source=source, ids=event_ids,
                                 failed=failed)
    try:
        result = replay.run(hub.storage, hub.settings, query, dry_run=dry_run, rules_file=rules_file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if not result.rows:
        raise click.ClickException("no stored event matches")
    currency = {p.subscriber_id: p.currency for p in result.people}
    for row in result.rows:
        said = replay_message(row.id, row.before, row.entries, row.status, row.error, currency.get(row.subscriber_id))
        click.echo(f"{row.source} {row.topic}: {row.status} — {said}")
    changed = result.changed_people()
    for person in changed:
        click.echo(diff_heading(person) + ":")
        for line in diff_lines(person):
            click.echo(f"  {line}")
    people = f"{len(changed)} subscriber{'' if len(changed) == 1 else 's'}"
    if dry_run:
        click.echo(f"Dry run: {len(result.rows)} event(s) replayed, {people} would change; nothing was kept.")
        return
    click.echo(f"{len(result.rows)} event(s) replayed, {people} changed.")
    push_soon(hub)
