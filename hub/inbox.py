"""The inbox: webhooks stored as they came, then drained in batches by workers.

receive() runs in the web process and only writes the raw row. drain_inbox() runs
in workers: normalize → apply → rules → outbox, one savepoint per row so a bad row
is marked failed without undoing or blocking the others.
"""
from __future__ import annotations

import json
import logging
import traceback as tb
from functools import lru_cache
from datetime import datetime, timezone

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from hub.apply import apply_event
from hub.models import FAILED, IGNORED, PENDING, PROCESSED, InboxEvent
from webhooks import Envelope, get_source

log = logging.getLogger(__name__)

# Headers that carry credentials are not kept (Chargebee sends basic auth).
_DROPPED_HEADERS = {"authorization", "cookie"}


def stored_headers(headers) -> dict:
    """The request headers worth keeping: everything but credentials."""
    return {k: v for k, v in headers.items() if k.lower() not in _DROPPED_HEADERS}


def receive(conn: Connection, source: str, envelope: Envelope, headers: dict, body: bytes,
            origin: str = "webhook") -> bool:
    """Insert the raw webhook unless (source, event id) is already stored; True if new."""
    params = {"source": source, "event_id": envelope.event_id, "topic": envelope.topic[:100],
              "headers": headers, "body": body, "received_at": datetime.now(timezone.utc),
              "triggered_at": envelope.triggered_at, "shop": envelope.shop,
              "api_version": envelope.api_version, "status": PENDING, "attempts": 0,
              "outcome": [], "origin": origin}
    return conn.execute(_insert_statement(conn.dialect.name), params).scalar() is not None


@lru_cache(maxsize=None)
def _insert_statement(dialect: str):
    # Built once per dialect: the webhook path then reuses SQLAlchemy's compiled form.
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return (insert(InboxEvent.__table__)
            .on_conflict_do_nothing(index_elements=["source", "event_id"])
            .returning(InboxEvent.__table__.c.id))


def claim_batch(session: Session, size: int) -> list[InboxEvent]:
    """The oldest pending rows, locked against other workers until commit."""
    query = select(InboxEvent).where(InboxEvent.status == PENDING).order_by(InboxEvent.id).limit(size)
    if session.bind.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    else:
        # SQLite has one writer: taking the write lock first keeps two workers from
        # reading the same pending rows.
        session.execute(update(InboxEvent).where(InboxEvent.id == -1).values(attempts=0))
    return list(session.scalars(query))


def drain_inbox(storage, settings, batch_size: int | None = None, now: datetime | None = None,
                max_batches: int | None = None) -> dict:
    """Process pending rows in batches until none is left; returns counts by status."""
    size = batch_size or settings.HUB_INBOX_BATCH
    counts = {PROCESSED: 0, IGNORED: 0, FAILED: 0}
    batches = 0
    while max_batches is None or batches < max_batches:
        with storage.session() as session:
            rows = claim_batch(session, size)
            if not rows:
                break
            for row in rows:
                process_row(session, row, settings, now)
                counts[row.status] += 1
            after_batch(session, settings)
        batches += 1
    return counts


def after_batch(session: Session, settings) -> None:
    """Work done once per batch rather than per row (outbox coalescing)."""
    from hub import outbox

    outbox.flush_pending_profiles(session, settings)


def process_row(session: Session, row: InboxEvent, settings, now: datetime | None = None) -> None:
    """Normalize, apply and decide for one stored webhook; the outcome is recorded on the row."""
    row.attempts = (row.attempts or 0) + 1
    row.processed_at = datetime.now(timezone.utc)
    source = get_source(row.source)
    try:
        payload = _payload(row)
    except ValueError as exc:
        row.status, row.error = FAILED, str(exc)
        return
    normalizer = source.TOPICS.get(row.topic)
    if normalizer is None:
        row.status, row.error = IGNORED, f"no handler for {row.source} topic {row.topic!r}"
        return
    savepoint = session.begin_nested()
    try:
        enrich = getattr(source, "ENRICH", {}).get(row.topic)
        if enrich is not None:
            payload = enrich(payload, settings)
        envelope = Envelope(event_id=row.event_id, topic=row.topic, shop=row.shop,
                            api_version=row.api_version, triggered_at=row.triggered_at)
        events = normalizer(payload, envelope)
        outcome = []
        subscriber_id = None
        for event in events:
            changes = apply_event(session, event)
            session.flush()
            entry = changes.to_dict()
            entry["occurred_at"] = event.occurred_at.isoformat()
            entry["triggers"] = decide(session, changes, event, row, settings, now)
            outcome.append(entry)
            if changes.subscriber is not None:
                subscriber_id = changes.subscriber.id
        savepoint.commit()
    except Exception as exc:  # the row records any failure; the batch goes on
        savepoint.rollback()
        row.status = FAILED
        row.error = f"{type(exc).__name__}: {exc}"[:2000]
        row.traceback = tb.format_exc()[-8000:]
        log.warning("inbox row %s (%s %s) failed: %s", row.id, row.source, row.topic, row.error)
        return
    row.status = PROCESSED if events else IGNORED
    row.error = None if events else "nothing the hub tracks in this payload"
    row.traceback = None
    row.outcome = outcome
    row.subscriber_id = subscriber_id


def _payload(row: InboxEvent) -> dict:
    try:
        payload = json.loads(row.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ValueError("body is JSON but not an object")
    return payload


def decide(session: Session, changes, event, row: InboxEvent, settings, now: datetime | None) -> list[str]:
    """Run the event rules for the changed subscriber and plan the outbox; trigger names fired."""
    from hub import outbox, rules

    subscriber = changes.subscriber
    if subscriber is None or changes.stale:
        return []
    at = now or event.occurred_at
    history = row.origin == "backfill"
    triggers = rules.on_event(session, subscriber, event, changes, at, inbox_event_id=row.id,
                              history=history)
    outbox.plan(session, settings, subscriber, changes, triggers, event, history=history)
    return [t.name for t in triggers]


def replay(session: Session, row: InboxEvent, settings) -> None:
    """Process a stored event again through the same code path."""
    row.status = PENDING
    row.error = None
    process_row(session, row, settings)
