"""Rate limits from each tool's documentation, shared by every worker process through Redis.

A limit is one or more windows per key ("klaviyo:events" has a burst window of one second and
a steady one of a minute): a call is allowed when every window of the key has held fewer than
its count of calls in the last span. A sliding window, not a token bucket: Klaviyo counts in
fixed windows of one second and one minute (https://developers.klaviyo.com/en/docs/
rate_limits_and_error_handling), and a bucket of 75 that refills at 75/s lets 150 calls
through in the first second, half of them refused. Calls never more than N in any span of
W seconds are never more than N in any of the tool's fixed windows, however they align.
With a Redis client the windows live in Redis (a sorted set of call times each) and a small
Lua script takes a place in all of them atomically, so any number of workers on any number
of hosts stay under the tool's limit together; without one they live in this process. A tool's 429 pauses
the key in every process for the seconds its Retry-After asked (`pause`), checked by the
same script.

Why not the `limits` library (5.8, the one Flask-Limiter uses): it holds one limit per call
and cannot hold these three things.
- Several windows taken all or none: `hit()` takes one RateLimitItem, so Klaviyo's burst and
  steady limits would be two scripts, and a refusal by the second after the first granted
  still spends a place in the first (testing every window first, then hitting, leaves a
  race between workers).
- A key paused for a tool's Retry-After: there is no call to refuse a key for N seconds; it
  would be one more Redis key read on every take, outside the library.
- The wait: `hit()` answers yes or no; the seconds until a place need `get_window_stats()`, a
  further round trip, in whole seconds of window (a RateLimitItem's window is an integer
  number of seconds, so `Rate(1, 0.05)` cannot be written). Its moving window also stamps
  entries with each worker's own clock, where this script reads Redis's.
Taken the library's way (the pause read, then one hit per window), every call is two or
three round trips to Redis where this script is one.
"""
from __future__ import annotations

import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

from hub.errors import RetryLater


@dataclass(frozen=True)
class Rate:
    """`requests` per `seconds`, e.g. Rate.parse("750/m")."""

    requests: int
    seconds: float

    _UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

    def __post_init__(self):
        if self.requests <= 0 or self.seconds <= 0:
            raise ValueError(f"a rate needs positive requests and seconds, got {self}")

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @classmethod
    def parse(cls, text: str) -> "Rate":
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*", str(text))
        if not match:
            raise ValueError(f"rate {text!r} is not like '75/s', '750/m' or '100/10s'")
        count, span, unit = match.groups()
        return cls(int(count), (int(span) if span else 1) * cls._UNITS[unit])


def _rates(*texts: str) -> tuple[Rate, ...]:
    return tuple(Rate.parse(t) for t in texts)


# Klaviyo: the burst and steady limits of each operation, from `x-klaviyo-ratelimit` in
# Klaviyo's OpenAPI documents (standins/contracts/klaviyo/). HubSpot: 100 requests per
# 10 s for private apps on Free/Starter (Professional/Enterprise allow 190; override in
# mappings/hubspot.yaml `rate_limits`). ActiveCampaign: 5 requests per second per account.
LIMITS: dict[str, tuple[Rate, ...]] = {
    "klaviyo:profile-import": _rates("75/s", "750/m"),
    "klaviyo:profile-bulk-import-jobs": _rates("10/s", "150/m"),
    "klaviyo:profile-bulk-import-job": _rates("10/s", "150/m"),  # Get Bulk Import Profiles Job
    "klaviyo:profile-bulk-import-job-errors": _rates("10/s", "150/m"),  # its import errors
    "klaviyo:events": _rates("350/s", "3500/m"),
    "klaviyo:event-bulk-create-jobs": _rates("10/s", "150/m"),
    "klaviyo:profile-subscription-bulk-create-jobs": _rates("75/s", "750/m"),
    "klaviyo:profile-subscription-bulk-delete-jobs": _rates("75/s", "750/m"),
    "klaviyo:list-relationships": _rates("10/s", "150/m"),
    "klaviyo:data-privacy-deletion-jobs": _rates("3/s", "60/m"),  # Request Profile Deletion
    "klaviyo:profiles": _rates("75/s", "750/m"),  # Get Profiles (the consent drift report)
    "hubspot:api": _rates("100/10s"),
    "activecampaign:api": _rates("5/s"),
}

# Takes a place in every window of KEYS[2..] or none; returns the seconds to wait ("0" when
# taken). KEYS[1] is the pause set after a tool's 429. A window is a sorted set of call times,
# those older than its span dropped first; when full, the wait is until enough of its oldest
# calls leave it. ARGV: count and span of each window, then this call's unique member.
# Redis's own clock is used so hosts with skewed clocks share one timeline.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local paused = redis.call('PTTL', KEYS[1])
if paused > 0 then return tostring(paused / 1000) end
local wait = 0
for i = 2, #KEYS do
  local cap, per = tonumber(ARGV[2 * i - 3]), tonumber(ARGV[2 * i - 2])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - per)
  local n = redis.call('ZCARD', KEYS[i])
  if n >= cap then
    local leaving = redis.call('ZRANGE', KEYS[i], n - cap, n - cap, 'WITHSCORES')
    wait = math.max(wait, tonumber(leaving[2]) + per - now)
  end
end
if wait > 0 then return tostring(wait) end
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], now, ARGV[#ARGV])
  redis.call('PEXPIRE', KEYS[i], math.ceil(tonumber(ARGV[2 * i - 2]) * 1000) + 1000)
end
return '0'
"""


# A tool counts a call when it reaches it. Calls that leave here a span apart can reach it
# less than a span apart, each delayed differently on the way (the network, the tool's front
# end), and the later one is refused: ActiveCampaign then asks for a pause of seconds. Each
# window is kept this much longer than the tool's span, a few per cent of a one-second limit.
ARRIVAL_MARGIN_S = 0.1


class Limiter:
    """Sliding windows per key; `acquire(key)` waits for a place or raises RetryLater."""

    def __init__(self, redis=None, prefix: str = "hub:ratelimit:", max_wait: float = 30.0,
                 limits: dict[str, tuple[Rate, ...]] | None = None, sleep=time.sleep,
                 margin: float = ARRIVAL_MARGIN_S):
        self.redis = redis
        self.prefix = prefix
        self.max_wait = max_wait
        self.margin = margin
        self.limits = {**LIMITS, **(limits or {})}
        self.sleep = sleep
        self._script = redis.register_script(_TAKE) if redis is not None else None
        self._lock = threading.Lock()
        self._windows: dict[str, deque[float]] = {}
        self._paused: dict[str, float] = {}

    def take(self, key: str, rates: tuple[Rate, ...] | None = None) -> float:
        """Take a place now (0.0) or say how many seconds until one is free."""
        rates = self.limits.get(key, ()) if rates is None else rates
        if self._script is not None:
            keys = [f"{self.prefix}{key}:pause"]
            keys += [f"{self.prefix}{key}:{r.requests}/{r.seconds:g}" for r in rates]
            args = [v for r in rates for v in (r.requests, r.seconds + self.margin)] + [uuid.uuid4().hex]
            return float(self._script(keys=keys, args=args))
        return self._take_local(key, rates)

    def _take_local(self, key: str, rates: tuple[Rate, ...]) -> float:
        with self._lock:
            now = time.monotonic()
            paused = self._paused.get(key, 0.0) - now
            if paused > 0:
                return paused
            windows, wait = [], 0.0
            for rate in rates:
                calls = self._windows.setdefault(f"{key}:{rate}", deque())
                span = rate.seconds + self.margin
                while calls and calls[0] <= now - span:
                    calls.popleft()
                if len(calls) >= rate.requests:
                    wait = max(wait, calls[len(calls) - rate.requests] + span - now)
                windows.append(calls)
            if wait > 0:
                return wait
            for calls in windows:
                calls.append(now)
            return 0.0

    def acquire(self, key: str, rates: tuple[Rate, ...] | None = None,
                max_wait: float | None = None) -> float:
        """Block until a place is taken; the seconds waited for it (0.0: the window had room).
        RetryLater when that would take over `max_wait` (the smaller of the limiter's and the
        caller's)."""
        limit = self.max_wait if max_wait is None else min(self.max_wait, max_wait)
        waited = 0.0
        while True:
            wait = self.take(key, rates)
            if wait <= 0:
                return waited
            if wait > limit:
                raise RetryLater(wait, f"held back by the {key} rate limit for {wait:.0f} s")
            self.sleep(wait)
            waited += wait

    def pause(self, key: str, seconds: float) -> None:
        """No requests on `key` for `seconds`, in every process (a tool's Retry-After)."""
        if seconds <= 0:
            return
        if self.redis is not None:
            pause_key = f"{self.prefix}{key}:pause"
            if self.redis.pttl(pause_key) < seconds * 1000:
                self.redis.set(pause_key, "1", px=int(seconds * 1000))
            return
        with self._lock:
            self._paused[key] = max(self._paused.get(key, 0.0), time.monotonic() + seconds)
