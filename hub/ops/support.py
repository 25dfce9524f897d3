"""Support actions from the sync log: retry deliveries, replay an inbound event, send a
customer's profile again, ask a worker to push now."""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

import connectors
from hub.db.unit import UnitOfWork
from hub.models import DEAD, QUEUED, Delivery, InboxEvent, Subscriber
from hub.sync import inbox, outbox

log = logging.getLogger(__name__)


def retry_deliveries(session: Session, ids=None, all_dead: bool = False, connector: str | None = None) -> int:
    """Queue deliveries again now: the given ids, or every dead one (of one connector)."""
    if ids:
        return outbox.retry(session, delivery_ids=[int(i) for i in ids])
    if not all_dead:
        return 0
    if connector is None:
        return outbox.retry(session, dead=True)
    dead_ids = list(session.scalars(select(Delivery.id).where(Delivery.connector == connector,
                                                              Delivery.status == DEAD)))
    return sum(outbox.retry(session, delivery_ids=dead_ids[i:i + 500]) for i in range(0, len(dead_ids), 500))


def replay_event(session: Session, row: InboxEvent, settings) -> list[dict]:
    """Process a stored event again (a new attempt, the earlier ones kept), then write the
    profile deliveries it made due; the new attempt's outcome entries."""
    unit = UnitOfWork(session)
    latest = inbox.replay(unit, row, settings)
    inbox.after_batch(unit, settings)
    return latest


def resend_profile(session: Session, settings, subscriber: Subscriber, connector: str) -> Delivery | None:
    """A fresh profile delivery of `subscriber` to `connector`, even if the tool should have it.

    The key keeps outbox's shape (profile:<subscriber>:<digest>:<suffix>) so the next
    automatic profile update still compares its digest with this one.
    """
    if connector not in profile_tools(settings):
        return None
    mapping = connectors.load_mapping(settings, connector)
    needs = connectors.CONNECTORS[connector].needs
    if "profile" not in mapping["send"] or subscriber.erased_at is not None or \
            not any(getattr(subscriber, n, None) for n in needs):
        return None
    payload = outbox.profile_payload(subscriber, outbox.profile_fields(subscriber), mapping)
    digest = outbox.profile_digest(payload)
    now = datetime.now(timezone.utc)
    delivery = Delivery(connector=connector, kind="profile", subscriber_id=subscriber.id,
                        idempotency_key=f"profile:{subscriber.id}:{digest}:resent-{now.timestamp():.6f}",
                        payload=payload, status=QUEUED, attempts=0, next_attempt_at=now,
                        history=False, created_at=now)
    session.add(delivery)
    session.flush()
    return delivery


def enabled_connectors(settings) -> list[str]:
    return outbox.enabled_connectors(settings)


def profile_tools(settings, enabled: list[str] | None = None) -> list[str]:
    """The enabled connectors (`enabled`, when the caller has read them already) that take
    profile updates (the "send again" buttons)."""
    return [name for name in (enabled if enabled is not None else enabled_connectors(settings))
            if "profile" in connectors.load_mapping(settings, name)["send"]]


def request_push(hub, connectors_=None) -> bool:
    """Ask a worker to push now (after commit); False when Redis is down (the backstop pushes later)."""
    names = list(connectors_) if connectors_ else enabled_connectors(hub.settings)
    try:
        for name in names:
            hub.queues.enqueue_push(name)
        return True
    except Exception as exc:  # Redis down: the worker's one-minute backstop pushes what is due
        log.warning("could not enqueue a push (%s); the backstop will push later", exc)
        return False
