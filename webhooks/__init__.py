"""Sources that post webhooks to the hub: name → module.

Each module exposes:
- `verify(settings, headers, body)`: raise hub.errors.SignatureInvalid unless authentic.
- `describe(headers, body) -> Envelope`: dedupe id, topic and metadata; never raises
  (a body that cannot be read gets an id from its hash and is failed later, when drained).
- `TOPICS`: topic → pure normalizer `(payload: dict, envelope: Envelope) -> list[CanonicalEvent]`.
- `ENRICH` (optional): topic → `(payload, settings) -> payload`, run by the worker before
  normalizing when a webhook carries ids only (I/O lives here, not in normalizers).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from importlib import import_module


@dataclass
class Envelope:
    """What the hub knows of a webhook before reading its body as the source's payload."""

    event_id: str
    topic: str
    shop: str | None = None
    api_version: str | None = None
    triggered_at: datetime | None = None
    extra: dict = field(default_factory=dict)


def body_hash_id(body: bytes) -> str:
    """A stable dedupe id for a body that carries none we can read."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def header(headers, name: str) -> str | None:
    """A header by case-insensitive name, from werkzeug Headers or a plain dict of any casing."""
    found = headers.get(name)
    if found is None:
        found = headers.get(name.lower())
    if found is not None:
        return found
    wanted = name.lower()
    for key, value in (headers or {}).items():
        if key.lower() == wanted:
            return value
    return None


SOURCE_NAMES = ("shopify", "stripe", "chargebee")


_MODULES: dict = {}  # name -> module: asked for once per webhook and per drained row


def get_source(name: str):
    """The module of a source; raises hub.errors.UnknownSource."""
    found = _MODULES.get(name)
    if found is not None:
        return found
    from hub.errors import UnknownSource

    if name not in SOURCE_NAMES:
        raise UnknownSource(name)
    found = _MODULES[name] = import_module(f"webhooks.{name}")
    return found


def webhook_secrets(settings) -> list[tuple[str, list[str]]]:
    """Each source with the names of its verification settings still unset (empty: configured)."""
    return [(name, [key for key in get_source(name).SECRET_SETTINGS if not getattr(settings, key)])
            for name in SOURCE_NAMES]
