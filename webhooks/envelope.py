"""What the hub knows of a webhook before its body is read as the platform's payload."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from hub.values import header  # noqa: F401 - read by the platforms through webhooks.header

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
