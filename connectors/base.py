"""What every connector speaks: a batch of deliveries in, one result per delivery out.

Payload shapes per `kind` (built by hub.sync.outbox, read by connectors):
- profile: {"subscriber_id", "email", "phone", "first_name", "last_name",
            "fields": {canonical field → value}, "cleared": [fields emptied since the tool
            last had them; absent when none]}  (connectors rename fields via mappings/<name>.yaml)
- event:   {"subscriber_id", "email", "phone", "name", "properties", "time", "unique_id", "history"}
- consent: {"subscriber_id", "email", "phone", "channel": "email"|"sms",
            "state": "subscribed"|"unsubscribed", "consented_at", "history": backfilled}
- erase:   {"subscriber_id", "email", "phone"}
"""
from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("profile", "event", "consent", "erase")
# Consent channel → what identifies the person on it.
CHANNEL_NEEDS = {"email": "email", "sms": "phone"}


@dataclass
class Outgoing:
    """One delivery handed to a connector."""

    delivery_id: int
    kind: str
    key: str
    payload: dict

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown delivery kind {self.kind!r}; expected one of {KINDS}")


@dataclass
class Result:
    """What the tool answered for one delivery."""

    http_status: int | None = None
    latency_ms: int | None = None
    request_id: str | None = None
    message: str | None = None


@dataclass
class Sent(Result):
    outcome: str = field(default="sent", init=False)


@dataclass
class RetryAfter(Result):
    seconds: float = 30.0
    outcome: str = field(default="retry", init=False)


@dataclass
class Failed(Result):
    outcome: str = field(default="failed", init=False)


def truncate(text: str | None, limit: int = 500) -> str | None:
    """The tool's words, cut to fit the attempt log."""
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Connector:
    """Base of every destination tool. Subclasses set the class attributes and push_batch."""

    name: str = ""
    max_batch: int = 100
    settings_keys: tuple[str, ...] = ()

    def __init__(self, settings, field_map: dict | None = None, limiter=None):
        self.settings = settings
        self.field_map = field_map or {}
        self.limiter = limiter

    @classmethod
    def missing_settings(cls, settings) -> list[str]:
        """Names of required settings that are empty (the connector is off while any is)."""
        return [k for k in cls.settings_keys if not getattr(settings, k, "")]

    @classmethod
    def takes_consent(cls, mapping: dict, channel: str) -> bool:
        """Whether this tool, as mapped, records marketing consent on `channel` ("email", "sms")."""
        return CHANNEL_NEEDS[channel] in cls.needs

    def push_batch(self, items: list[Outgoing]) -> dict[int, Result]:
        """Send the batch; one Result per delivery id."""
        raise NotImplementedError
