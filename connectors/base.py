"""What every connector speaks: a batch of deliveries in, one result per delivery out, and
the one way a connector calls its tool (`Connector.call`: rate limit → time → call → classify).

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

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from connectors.ratelimit import Limiter
from hub.errors import RetryLater
from hub.values import asks_again, header, retry_after

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
class Holding:
    """What a tool holds of one person's marketing consent on one channel, as its API reads it
    (the consent drift report compares it with the source's)."""

    channel: str  # "email" | "sms"
    identifier: str  # the email (lower-cased) or the phone number in E.164
    state: str  # "subscribed" | "unsubscribed" (never subscribed, or withdrawn)
    since: str | None = None  # when the tool recorded that state, when it says
    ref: str | None = None  # the tool's own id of the person


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
class Held(RetryAfter):
    """Not sent: the tool's rate limit has no place for `seconds`, and waiting would hold
    the worker. No request was made, so it is no attempt; the push goes on once the window
    has room again. `guessed`: the limiter was not asked; the last request had to wait that
    long for its place (see Connector.call), and the window may have room sooner."""

    outcome: str = field(default="held", init=False)
    guessed: bool = False


@dataclass
class Failed(Result):
    outcome: str = field(default="failed", init=False)


def truncate(text: str | None, limit: int = 500) -> str | None:
    """The tool's words, cut to fit the attempt log."""
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def classify(status: int, wait: float = 0.0, message: str | None = None, latency_ms: int | None = None,
             request_id: str | None = None) -> Result:
    """The Result for an HTTP answer: 2xx sent; 408, 425, 429 and 5xx retried after the
    `wait` seconds the tool asked for; other 4xx failed. `message` is the tool's own error text."""
    common = {"http_status": status, "latency_ms": latency_ms, "request_id": request_id}
    if 200 <= status < 300:
        return Sent(**common)
    text = truncate(message or f"HTTP {status}")
    if asks_again(status) or status < 100:
        return RetryAfter(seconds=wait, message=text, **common)
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


@dataclass
class Reply:
    """A tool's HTTP answer as the call template reads it, whether the SDK returned it or
    raised it: `body` is the raw text (read for the tool's error message), `data` what the
    connector gets back when it is a 2xx."""

    status: int
    headers: Any = None
    body: Any = None
    data: Any = None


class Connector:
    """Base of every destination tool. Subclasses set the class attributes and push_batch."""

    name: str = ""
    max_batch: int = 100
    settings_keys: tuple[str, ...] = ()
    # What differs between tools in `call`: the exceptions by which the SDK says it got no
    # answer, and those by which it says the answer was not a 2xx (none for plain requests);
    # the header that carries the tool's request id; whether a 429 pauses the whole
    # rate-limit key in every worker for the Retry-After (a tool's account-wide limit).
    transport_errors: tuple[type[BaseException], ...] = ()
    refusals: tuple[type[BaseException], ...] = ()
    request_id_header: str | None = None
    pause_on_429: bool = True
    # Longest sleep for a rate-limit token before the first call of a delivery is Held
    # instead (None: the limiter's own max_wait). Pushes set it short, so a slow tool yields
    # its worker; a delivery whose first request went out sleeps for the rest (holding it
    # then would waste the requests made and send them again).
    rate_wait: float | None = None
    # A tool whose documented rate limit takes deliveries far slower than Klaviyo's (which
    # imports 10,000 profiles per call, 10 calls a second). Its pushes wait in a queue that
    # workers take from only when nothing else waits (hub/queues.py), as do those of any
    # tool whose rate limit held its last push.
    slow: bool = False
    # Seconds in all that `call` may wait out the tool's 429s (their Retry-After) and ask
    # again before it answers with the 429: for one-off work with no queue to come back
    # through (`hub install`). Pushes keep 0: the delivery is retried later instead.
    patience: float = 0.0

    def __init__(self, settings, field_map: dict | None = None, limiter=None):
        self.settings = settings
        self.field_map = field_map or {}
        # Never faster than the tool's documented limits: a connector given no limiter (the
        # pushes share one in Redis) keeps one of its own.
        self.limiter = limiter if limiter is not None else Limiter()
        # rate-limit key → monotonic time its window has room again: the rest of a
        # batch held back by one refusal is held without asking the limiter each time.
        self._held_until: dict[str, float] = {}
        self._guessed: set[str] = set()  # keys of _held_until set from a wait, not by the limiter
        self._starting = True  # no request made yet for the deliveries under way
        self._preparing = False  # within preparing(), before any request of the delivery

    def push(self, items: list[Outgoing]) -> dict[int, Result]:
        """push_batch, whose first request may be Held by the rate limit (see rate_wait)."""
        self._starting = True
        return self.push_batch(items)

    def one_by_one(self, items: list[Outgoing], push: Callable[[Outgoing], Result]) -> dict[int, Result]:
        """push(item) for each delivery, each of which may be Held before its first request:
        for tools called once or more per delivery, so a push yields between deliveries."""
        results = {}
        for item in items:
            self._starting = True
            results[item.delivery_id] = push(item)
        return results

    @contextmanager
    def preparing(self):
        """Requests that set the tool up for a delivery (ids the connector keeps, so none is
        made twice): while nothing of the delivery has gone out, each is held like its first
        request rather than slept for, and a later push goes on from where it stopped."""
        self._preparing = self._starting
        try:
            yield
        finally:
            self._preparing = False

    def use_limiter(self, limiter, rate_wait: float | None = None) -> None:
        """Take tokens from `limiter`, sleeping at most `rate_wait` for one (see `call`)."""
        if limiter is not self.limiter:
            self._held_until.clear()
            self._guessed.clear()
        self.limiter, self.rate_wait = limiter, rate_wait

    def ask_again(self) -> None:
        """Drop the holds guessed from a wait: the next delivery asks the limiter, which
        knows when its window has room."""
        for key in self._guessed:
            self._held_until.pop(key, None)
        self._guessed.clear()

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

    def call(self, limit: str, send: Callable[[], Any]) -> tuple[Result, Any]:
        """One request to the tool: (its Result, the answer's data when 2xx, else None).

        Takes a token of the `limit` rate limit (mapping `rate_limits[limit]` over the
        defaults in connectors/ratelimit.py) or answers RetryAfter when that would wait too
        long (Held: no request made); times `send()`, which makes the request and reads the answer; classifies what
        came back. A 429 pauses the limit in every worker for the seconds the tool asked,
        and within the connector's `patience` the request is made again after them.
        """
        waited = 0.0
        while True:
            result, data = self._call_once(limit, send)
            throttled = isinstance(result, RetryAfter) and result.http_status == 429
            pause = max(result.seconds, 1.0) if throttled else 0.0
            if not pause or waited + pause > self.patience:
                return result, data
            time.sleep(pause)
            waited += pause

    def _call_once(self, limit: str, send: Callable[[], Any]) -> tuple[Result, Any]:
        key = f"{self.name}:{limit}"
        starting = (self._starting or self._preparing) and self.rate_wait is not None
        left = self._held_until.get(key, 0.0) - time.monotonic()
        if starting and left > 0:
            return Held(seconds=left, message=f"held back by the {key} rate limit",
                        guessed=key in self._guessed), None
        try:
            waited = self.limiter.acquire(key, self.field_map["rate_limits"].get(limit),
                                          max_wait=self.rate_wait if starting else None)
        except RetryLater as exc:
            if not starting:
                return RetryAfter(seconds=exc.retry_after, message=str(exc)), None
            self._held_until[key] = time.monotonic() + exc.retry_after
            self._guessed.discard(key)
            return Held(seconds=exc.retry_after, message=str(exc)), None
        if self.rate_wait is not None and waited > self.rate_wait:
            # The window is full: a delivery begun now would sleep through its requests
            # too, holding the worker. The next ones are held until about one wait from now.
            self._held_until[key] = time.monotonic() + waited
            self._guessed.add(key)
        self._starting = self._starting and self._preparing
        answer = refusal = lost = None
        with Clock.timing() as clock:
            try:
                answer = send()
            except self.refusals as exc:
                refusal = exc
            except self.transport_errors as exc:
                lost = exc
        if lost is not None:
            return unreachable(lost, clock.ms), None
        reply = self.reply(answer) if refusal is None else self.refused(refusal)
        ok = 200 <= reply.status < 300
        result = classify(reply.status, 0.0 if ok else self.asked_wait(reply),
                          None if ok else self.message(reply.body), clock.ms, self.request_id(reply))
        if reply.status == 429 and self.pause_on_429:
            self.limiter.pause(key, result.seconds)
        return result, reply.data if ok else None

    def reply(self, answer) -> Reply:
        """What `send()` returned, read as a Reply (by default a requests.Response whose
        JSON body is the data)."""
        ok = 200 <= answer.status_code < 300
        data = (answer.json() if answer.content else {}) if ok else None
        return Reply(answer.status_code, answer.headers, None if ok else answer.text, data)

    def refused(self, exc: BaseException) -> Reply:
        """A `refusals` exception read as a Reply (the OpenAPI-generated SDKs' ApiException)."""
        return Reply(exc.status or 0, exc.headers, exc.body)

    def message(self, body) -> str | None:
        """The tool's own words in an error body; the body itself by default."""
        return body

    def asked_wait(self, reply: Reply) -> float:
        """Seconds the tool asks for before it takes a request again, when it refused one
        (429, 5xx): its Retry-After by default, 0 when it says nothing."""
        return retry_after(reply.headers)

    def request_id(self, reply: Reply) -> str | None:
        """The tool's id of this request, for its support desk."""
        return header(reply.headers, self.request_id_header) if self.request_id_header else None
