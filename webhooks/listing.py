"""What a platform's lister gives `hub backfill` and reconciliation (hub.ops.backfill drives them).

A lister walks the platform's paginated API and wraps every object as the webhook its
topic would have sent (`Item`), a page at a time (`Page`); `Pacer` keeps it within the
platform's rate limit. Each source declares one `Lister` in its `Source`.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

# --- what a lister returns ---------------------------------------------------------------

@dataclass
class Item:
    """One listed object, wrapped as the webhook body its topic would carry.

    `kind`, `source_id` and `updated_at` name the model row it becomes (customer,
    subscription, payment, order) so reconciliation can skip what the hub already holds.
    """

    event_id: str
    topic: str
    payload: dict
    updated_at: datetime | None = None
    kind: str | None = None
    source_id: str | None = None
    shop: str | None = None
    api_version: str | None = None


@dataclass
class Page:
    """Items of one API page and where the next page starts (None: the stream is done)."""

    items: list[Item]
    next: dict | None
    total: int | None = None  # objects in the whole stream, when the platform says


def dedupe_id(kind: str, object_id, version) -> str:
    """The inbox dedupe id of a listed object: the same object in the same state is stored once."""
    return f"sync:{kind}:{object_id}@{version}"


# --- a source's lister: declared in webhooks/<source>/backfill.py ------------------------

@dataclass
class Lister:
    """A source's listing API. `client(settings)` opens one run's client, whose
    `page(stream, cursor, since) -> Page` returns one page; `problem(settings)` says why
    the source cannot be listed (not configured), or None."""

    source: str
    streams: tuple[str, ...]  # backfill, in order (customers before what refers to them)
    changes: tuple[str, ...]  # what reconciliation polls
    problem: Callable
    client: Callable
    # What the platform's listing leaves out however far back a backfill asks, said with
    # every backfill's summary (None: it lists everything it holds).
    limit: str | None = None


# --- rate limits: shared by the listers ------------------------------------------------------

class Pacer:
    """At most `rate` requests per second, with bursts of up to `burst` (a token bucket);
    `hold(seconds)` makes every caller wait, as a 429 with Retry-After asks."""

    def __init__(self, rate: float, burst: float = 1.0, clock=time.monotonic, sleep=time.sleep):
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate, self.burst = float(rate), max(1.0, float(burst))
        self.clock, self.sleep = clock, sleep
        self.tokens = self.burst
        self.stamp = clock()
        self.not_before = 0.0
        self.waited = 0.0
        self._lock = threading.Lock()

    def take(self, cost: float = 1.0) -> None:
        """Wait until `cost` tokens are there, then spend them."""
        while True:
            with self._lock:
                now = self.clock()
                self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                wait = max(self.not_before - now, (cost - self.tokens) / self.rate if self.tokens < cost else 0.0)
                if wait <= 0:
                    self.tokens -= cost
                    return
            self.waited += wait
            self.sleep(wait)

    def sync(self, available: float, rate: float | None = None, burst: float | None = None) -> None:
        """Take the platform's own count of what is left (Shopify's throttleStatus)."""
        with self._lock:
            self.rate = float(rate) if rate else self.rate
            self.burst = float(burst) if burst else self.burst
            self.tokens = min(self.burst, float(available))
            self.stamp = self.clock()

    def hold(self, seconds: float) -> None:
        """No request before `seconds` from now (Retry-After, a throttled answer)."""
        with self._lock:
            self.not_before = max(self.not_before, self.clock() + max(0.0, seconds))
            self.tokens = 0.0
