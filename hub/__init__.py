"""The hub: a self-hosted subscription lifecycle hub.

What the package offers: create_app() builds the web app; Hub bundles what every process
needs (settings, storage, queues), made by make_hub(), so workers and the CLI share one
way in. The names resolve on first use (PEP 562): every `import hub.<module>` runs this
file first, and a command such as `hub --help` must not pay for Flask and SQLAlchemy.
"""
from __future__ import annotations

from importlib import import_module

_EXPORTS = {"Hub": "hub.context", "make_hub": "hub.context", "current_hub": "hub.context",
            "use_hub": "hub.context", "Settings": "hub.config", "create_app": "hub.web.app"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hub' has no attribute {name!r}")
