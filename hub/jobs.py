"""Thin RQ jobs: open the process's hub, call the core. Jobs take ids and small dicts only."""
from __future__ import annotations

import logging
from datetime import datetime

from hub import Hub, make_hub
from hub.values import utc

log = logging.getLogger(__name__)
_hub: Hub | None = None


def current() -> Hub:
    """The hub of this worker process (built once)."""
    global _hub
    if _hub is None:
        _hub = make_hub()
    return _hub


def use(hub: Hub) -> None:
    """Make `hub` the one jobs of this process use (worker start-up, tests)."""
    global _hub
    _hub = hub


def drain_inbox_job() -> dict:
    """Drain the inbox until empty, then ask the outbox to push what it planned."""
    from hub.inbox import drain_inbox

    hub = current()
    # Cleared before looking for rows: a webhook stored after this point sets the flag
    # again and enqueues another drain (see Queues.request_drain).
    hub.queues.clear_drain_request()
    counts = drain_inbox(hub.storage, hub.settings)
    if any(counts.values()):
        request_pushes(hub)
    return counts


def request_pushes(hub: Hub) -> None:
    """Enqueue one push job per enabled connector that has deliveries due."""
    from hub import outbox

    enabled = getattr(outbox, "enabled_connectors", lambda settings: [])(hub.settings)
    for name in enabled:
        hub.queues.enqueue("hub.jobs.push_batch_job", name, queue="outbox", result_ttl=0)


def push_batch_job(connector: str) -> dict:
    """Push due deliveries of one connector, batch after batch."""
    from hub import outbox

    hub = current()
    return outbox.push_batch(hub.storage, hub.settings, connector, redis=hub.queues.connection)


def sweep_job(at: str | None = None) -> dict:
    """Run every time rule as of `at` (ISO-8601; default now)."""
    from hub import rules

    hub = current()
    now = utc(at) if at else datetime.now().astimezone()
    with hub.storage.session() as session:
        counts = rules.sweep(session, hub.settings, utc(now))
    request_pushes(hub)
    return counts


def backstop_job() -> dict:
    """Every minute: drain rows a lost enqueue left behind, push what is due."""
    counts = drain_inbox_job()
    request_pushes(current())
    return counts
