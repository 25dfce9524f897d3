"""Sources that post webhooks to the hub: name → module.

Each module exposes:
- `verify(settings, headers, body)`: raise hub.errors.SignatureInvalid unless authentic
  (SourceNotConfigured, its subclass, when the source's secret is not set).
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

# `header` is re-exported: the platforms' modules read headers through `webhooks.header`.
from hub.values import header as header

# The topic of a webhook whose body names no event the hub can identify: stored (the
# platform gets its 200 and stops retrying) and failed when drained, for staff to see.
UNREADABLE = "unreadable"

# Widths of the inbox's columns (hub.models.InboxEvent): an envelope always fits them, so
# no header or body, however long, turns a webhook into a refused write.
_EVENT_ID_MAX, _TOPIC_MAX, _SHOP_MAX, _API_VERSION_MAX = 255, 100, 255, 40


@dataclass
class Envelope:
    """What the hub knows of a webhook before reading its body as the source's payload."""

    event_id: str
    topic: str
    shop: str | None = None
    api_version: str | None = None
    triggered_at: datetime | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if len(self.event_id) > _EVENT_ID_MAX or not _storable(self.event_id):
            # Hashed, not cut: still one id per event, so the platform's retries stay duplicates.
            self.event_id = body_hash_id(self.event_id.encode("utf-8", "surrogatepass"))
        self.topic = _fitted(self.topic, _TOPIC_MAX)
        self.shop = _fitted(self.shop, _SHOP_MAX)
        self.api_version = _fitted(self.api_version, _API_VERSION_MAX)


def _storable(text: str) -> bool:
    """Whether a database takes the text: a lone surrogate (JSON's "\\ud800") it refuses."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _fitted(text: str | None, width: int) -> str | None:
    if not text:
        return text
    return (text if _storable(text) else text.encode("utf-8", "replace").decode())[:width]


def body_hash_id(body: bytes) -> str:
    """A stable dedupe id for a body that carries none we can read."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def text_or_none(value) -> str | None:
    """A body's field as the envelope keeps it: text, or nothing."""
    return value if isinstance(value, str) else None


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
