"""Every exception the hub raises on purpose, in one flat list."""


class HubError(Exception):
    """Base of the hub's own errors."""


class SignatureInvalid(HubError):
    """A webhook's signature or credentials did not verify."""


class SourceNotConfigured(SignatureInvalid):
    """A webhook arrived for a source whose secret is not set: nothing can verify it.
    The hub answers 503 (its setup is missing), not 401 (the sender's signature is wrong);
    a caller that only knows SignatureInvalid still refuses it."""


class UnknownSource(HubError):
    """A webhook arrived for a source the hub does not know."""


class BodyRefused(HubError):
    """A request body the hub will not read: length unknown (411) or over the limit (413)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class MalformedPayload(HubError):
    """A stored body cannot be read as the source's payload."""


class StaleUpdate(HubError):
    """An update older than what the hub already holds."""


class DrainerBusy(HubError):
    """Another process is draining this SQLite database's inbox right now."""


class RetryLater(HubError):
    """A tool asked us to come back later (429, 5xx, timeout)."""

    def __init__(self, retry_after: float, message: str = ""):
        super().__init__(message or f"retry after {retry_after:.0f} s")
        self.retry_after = float(retry_after)


class ChargeDeclined(HubError):
    """A platform asked to charge again did try, and the card was declined (the message is the
    platform's), with the platform's decline code. `hard` says why no retry will fix it (a
    lost card, the issuer's "do not try again"), None for a decline a later retry may pass."""

    def __init__(self, message: str, code: str | None = None, hard: str | None = None):
        super().__init__(message)
        self.code = code
        self.hard = hard


class Permanent(HubError):
    """A tool refused the request for good (4xx other than 429)."""


class ConfigError(HubError):
    """A setting or mapping file is wrong; the message names it."""
