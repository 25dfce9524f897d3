"""`hub replay --event ID | --failed`: stored events processed again, as the sync log's Replay does."""
from __future__ import annotations

import click
from sqlalchemy import or_, select

from hub.commands import command_hub, push_soon
from hub.models import FAILED, InboxEvent, Subscriber


@click.command("replay")
@click.option("--event", "event_ids", multiple=True, help="Inbox row id or platform event id.")
@click.option("--failed", is_flag=True, help="Every event whose processing failed.")
def command(event_ids, failed):
    """Process stored events again through the same code path."""
    # Start-up cost: the pipeline (every connector's SDK) and the web pages (Flask).
    from hub.sync.inbox import after_batch  # noqa: PLC0415
    from hub.sync.inbox import replay as replay_row  # noqa: PLC0415
    from hub.web.synclog import replay_message  # noqa: PLC0415

    if not event_ids and not failed:
        raise click.UsageError("name --event ID (repeatable) or --failed")
    hub = command_hub()
    with hub.storage.session() as session:
        query = select(InboxEvent)
        if failed:
            query = query.where(InboxEvent.is_open(), InboxEvent.status == FAILED)
        else:
            ids = [int(e) for e in event_ids if e.isdigit()]
            query = query.where(or_(InboxEvent.id.in_(ids), InboxEvent.event_id.in_(event_ids)))
        rows = list(session.scalars(query.order_by(InboxEvent.id)))
        if not rows:
            raise click.ClickException("no stored event matches")
        for row in rows:
            before = row.status
            latest = replay_row(session, row, hub.settings)
            owner = session.get(Subscriber, row.subscriber_id) if row.subscriber_id else None
            said = replay_message(row.id, before, latest, row.status, row.error, owner.currency if owner else None)
            click.echo(f"{row.source} {row.topic}: {row.status} — {said}")
        after_batch(session, hub.settings)  # the profile updates the replayed rows planned
    push_soon(hub)
