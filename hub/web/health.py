"""GET /healthz and GET /metrics."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flask import Blueprint, Response, jsonify
from sqlalchemy import func, select

from hub.models import FAILED, PENDING, InboxEvent
from hub.ops.metrics import CONTENT_TYPE, render
from hub.ops.synclog import open_event_counts
from hub.web import current_hub

bp = Blueprint("health", __name__)


def _stuck_pending(hub) -> int:
    """Rows still pending longer than HUB_STUCK_PENDING_SECONDS after they arrived, read
    through the open rows' index as open_event_counts reads them."""
    since = datetime.now(timezone.utc) - timedelta(seconds=hub.settings.HUB_STUCK_PENDING_SECONDS)
    with hub.storage.session() as session:
        waiting = InboxEvent.pending_oldest_first(select(InboxEvent.id).where(InboxEvent.received_at < since))
        return session.scalar(select(func.count()).select_from(waiting.subquery()))


@bp.get("/healthz")
def healthz():
    hub = current_hub()
    checks, healthy = {}, True
    try:
        hub.storage.ping()
        with hub.storage.session() as session:
            counts = open_event_counts(session)
        checks["database"] = "ok"
        checks["inbox_backlog"] = counts.get(PENDING, 0)
        checks["inbox_failed"] = counts.get(FAILED, 0)
        # A backlog is work; one whose oldest rows wait on and on means the drain is stuck.
        checks["inbox_stuck"] = _stuck_pending(hub) if counts.get(PENDING) else 0
        if checks["inbox_stuck"]:
            healthy = False
    except Exception as exc:  # any failure to reach the database is unhealthy
        checks["database"], healthy = f"down: {type(exc).__name__}", False
    try:
        hub.queues.ping()
        checks["redis"] = "ok"
        checks["queues"] = hub.queues.depth()
    except Exception as exc:
        checks["redis"], healthy = f"down: {type(exc).__name__}", False
    checks["status"] = "ok" if healthy else "unhealthy"
    return jsonify(checks), 200 if healthy else 503


@bp.get("/metrics")
def metrics():
    return Response(render(current_hub()), content_type=CONTENT_TYPE)
