"""The hub of a process: settings, storage and queues, built once and passed on.

Entry points (the web app, RQ jobs, commands) build a Hub with make_hub() and hand it to
the code they call; jobs run by dotted path in a worker find theirs with current_hub().
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import connectors
from hub.config import Settings
from hub.db.engine import Storage
from hub.masking import mask_logs
from hub.queues import Queues


@dataclass
class Hub:
    settings: Settings
    storage: Storage
    queues: Queues


def make_hub(overrides: dict | None = None, settings: Settings | None = None) -> Hub:
    """Settings from the environment, with the database and queues they name."""
    settings = settings or Settings.from_env(overrides=overrides)
    logging.basicConfig(level=settings.HUB_LOG_LEVEL,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    mask_logs()  # no raw email or phone in any log line
    return Hub(settings=settings, storage=Storage(settings.DATABASE_URL),
               queues=Queues(settings, connectors.slow_tools()))


class _ProcessHub:
    """The one Hub of a worker process: RQ calls jobs by dotted path with ids only, so the
    process keeps the hub it built (one database pool, one Redis connection) for all of them."""

    hub: Hub | None = None


def current_hub() -> Hub:
    """The hub of this process (built from the environment on first use)."""
    if _ProcessHub.hub is None:
        _ProcessHub.hub = make_hub()
    return _ProcessHub.hub


def use_hub(hub: Hub) -> None:
    """Make `hub` the one this process's jobs use (worker start-up, tests)."""
    _ProcessHub.hub = hub
