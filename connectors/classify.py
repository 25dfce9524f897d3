"""Turn a tool's answer into a Result: 2xx sent; 429, 5xx and timeouts retried; other 4xx failed."""
from __future__ import annotations

import time
from contextlib import contextmanager
from email.utils import parsedate_to_datetime

from connectors.base import Failed, Result, RetryAfter, Sent, truncate

# 408 and 425 are the server asking us to try again, like 429 and 5xx.
RETRY_STATUSES = {408, 425, 429}


def retry_after(headers) -> float:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); 0.0 when absent."""
    value = _header(headers, "Retry-After")
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return 0.0


def _header(headers, name: str):
    if not headers:
        return None
    if hasattr(headers, "get"):
        found = headers.get(name)
        if found is not None:
            return found
    lowered = name.lower()
    for key, value in dict(headers).items():
        if key.lower() == lowered:
            return value
    return None


def classify(status: int, headers=None, message: str | None = None, latency_ms: int | None = None,
             request_id: str | None = None) -> Result:
    """The Result for an HTTP answer; `message` is the tool's own error text."""
    common = dict(http_status=status, latency_ms=latency_ms, request_id=request_id)
    if 200 <= status < 300:
        return Sent(**common)
    text = truncate(message or f"HTTP {status}")
    if status in RETRY_STATUSES or status >= 500 or status < 100:
        return RetryAfter(seconds=retry_after(headers), message=text, **common)
    return Failed(message=text, **common)


def unreachable(exc: BaseException, latency_ms: int | None = None) -> RetryAfter:
    """A timeout or refused connection: try again later."""
    return RetryAfter(seconds=0.0, latency_ms=latency_ms,
                      message=truncate(f"no answer: {type(exc).__name__}: {exc}"))


class Clock:
    """Milliseconds spent in a `with Clock.timing() as clock:` block."""

    ms: int = 0

    @classmethod
    @contextmanager
    def timing(cls):
        clock = cls()
        started = time.perf_counter()
        try:
            yield clock
        finally:
            clock.ms = int((time.perf_counter() - started) * 1000)
