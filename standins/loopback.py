"""Base of the HTTP stand-ins: a ThreadingHTTPServer on 127.0.0.1 (port 0) in a thread.

A subclass lists ROUTES as (method, path regex, handler method name); a handler gets the
Call and returns (status, JSON body or None, extra headers). Every request is recorded in
`calls`. Faults make the stand-in misbehave like the real tool does:

    fake.fail(429, retry_after=2, fraction=1/3)   # a third of the requests throttled
    fake.fail(503, times=1)                       # the next request only
    fake.fail(400, message="Invalid input.")      # the tool's own error body (see error_body)
    fake.slow(2.0, times=1)                       # answer after 2 s (a client timeout)
    stall = fake.stall(path="/api/events")        # done, but answered only at heal(): a client
    stall.reached.wait(10)                        # killed mid-call (the tool has the request)
"""
from __future__ import annotations

import json
import math
import re
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Call:
    """One request the stand-in received."""

    method: str
    path: str
    query: dict
    headers: dict
    raw: bytes
    body: object = None
    operation: str | None = None
    status: int | None = None
    params: dict = field(default_factory=dict)


@dataclass
class Fault:
    status: int | None
    retry_after: float | None = None
    delay: float = 0.0
    body: object = None
    message: str | None = None
    fraction: float | None = None
    times: int | None = None
    path: str | None = None
    seen: int = 0
    hold: threading.Event | None = None  # the answer waits until it is set (stall, heal)
    reached: threading.Event = field(default_factory=threading.Event)  # a request was handled

    def hits(self, call: Call) -> bool:
        if self.path and self.path not in call.path:
            return False
        if self.times is not None and self.times <= 0:
            return False
        self.seen += 1
        if self.fraction is not None and (math.floor(self.seen * self.fraction)
                                          == math.floor((self.seen - 1) * self.fraction)):
            return False
        if self.times is not None:
            self.times -= 1
        return True


class RollingLimit:
    """At most `count` requests in any `span` seconds, counted as they arrive; a refused one
    is not counted. `throttled` counts the refusals. Kept apart from the hub's own limiter
    (connectors/ratelimit.py) on purpose: the tool's side counts independently of the
    client, so a fault in the hub's pacing shows up here as a 429."""

    def __init__(self, count: int, span: float):
        self.count, self.span = count, span
        self.arrivals: deque[float] = deque()
        self.throttled = 0

    def wait(self) -> float:
        """0.0 and the request counted, or the seconds until the window takes one."""
        now = time.monotonic()
        while self.arrivals and self.arrivals[0] <= now - self.span:
            self.arrivals.popleft()
        if len(self.arrivals) >= self.count:
            self.throttled += 1
            return self.arrivals[0] + self.span - now
        self.arrivals.append(now)
        return 0.0

    def remaining(self) -> int:
        return max(0, self.count - len(self.arrivals))


class LoopbackServer:
    """Run with `with Fake() as fake:`; `fake.url` is the base URL."""

    ROUTES: list[tuple[str, str, str]] = []

    def __init__(self):
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        self.crashes: list[str] = []
        self.lock = threading.RLock()
        self.limit: RollingLimit | None = None  # the tool's rate limit, if the stand-in holds one
        self._routes = [(m, re.compile(f"^{p}$"), h) for m, p, h in self.ROUTES]
        self._server: ThreadingHTTPServer | None = None

    # Life cycle ---------------------------------------------------------------------

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                # Headers and body go out in two writes: without this, Nagle's algorithm and
                # the client's delayed ACK add ~40 ms to every answer.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _any(self):
                fake._handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.heal()  # stalled answers go out, so their threads end
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # Faults -------------------------------------------------------------------------

    def fail(self, status: int, *, retry_after: float | None = None, fraction: float | None = None,
             times: int | None = None, path: str | None = None, message: str | None = None,
             body=None, delay: float = 0.0) -> Fault:
        fault = Fault(status=status, retry_after=retry_after, fraction=fraction, times=times, path=path,
                      message=message, body=body, delay=delay)
        with self.lock:
            self.faults.append(fault)
        return fault

    def slow(self, seconds: float, *, times: int | None = None, path: str | None = None) -> Fault:
        return self.fail(None, delay=seconds, times=times, path=path)

    def stall(self, *, times: int | None = 1, path: str | None = None) -> Fault:
        """Handle the request, then hold its answer until heal(); `reached` is set once handled."""
        fault = Fault(status=None, times=times, path=path, hold=threading.Event())
        with self.lock:
            self.faults.append(fault)
        return fault

    def heal(self) -> None:
        with self.lock:
            for fault in self.faults:
                if fault.hold is not None:
                    fault.hold.set()
            self.faults.clear()

    def error_body(self, status: int, message: str) -> dict:
        """The tool's error document; subclasses speak their tool's shape."""
        return {"message": message}

    def authorized(self, call: Call) -> bool:
        return True

    def rate_limit_wait(self, call: Call) -> float:
        """Seconds until the tool takes this request again (0: it takes it now); a tool with
        rate limits counts the request here (in `limit`, a RollingLimit, by default) and
        answers its `refusal` past them."""
        return self.limit.wait() if self.limit else 0.0

    def refusal(self, wait: float) -> tuple[int, object, dict]:
        """The answer past the rate limit, `wait` seconds before the tool takes a request
        again: 429 with Retry-After by default."""
        return 429, self.error_body(429, _REASONS[429]), {"Retry-After": f"{math.ceil(wait)}"}

    # Requests -----------------------------------------------------------------------

    def operations(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.operation == name]

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        split = urlsplit(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        call = Call(request.command, split.path, parse_qs(split.query), dict(request.headers.items()), raw, body)
        with self.lock:
            self.calls.append(call)
            fault = next((f for f in self.faults if f.hits(call)), None)
        status, document, headers = self._answer(call, fault)
        call.status = status
        if fault is not None:
            fault.reached.set()
            if fault.hold is not None:
                fault.hold.wait(STALL_LIMIT_S)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        # Bytes go out as they are: a page a proxy or a maintenance screen answers instead of JSON.
        data = b"" if document is None else document if isinstance(document, bytes) else json.dumps(document).encode()
        try:
            request.send_response(status)
            request.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
            request.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                request.send_header(name, str(value))
            request.end_headers()
            request.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)

    def _answer(self, call: Call, fault: Fault | None) -> tuple[int, object, dict]:
        route = next(((h, m) for verb, rx, h in self._routes if verb == call.method
                      for m in [rx.match(call.path)] if m), None)
        if route is not None:
            call.operation, call.params = route[0], route[1].groupdict()
        if fault is not None and fault.status is not None:
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            body = fault.body if fault.body is not None else self.error_body(
                fault.status, fault.message or _REASONS.get(fault.status, "error"))
            return fault.status, body, headers
        if not self.authorized(call):
            return 401, self.error_body(401, "Authentication credentials were not provided."), {}
        if route is None:
            return 404, self.error_body(404, f"No route for {call.method} {call.path}"), {}
        with self.lock:
            wait = self.rate_limit_wait(call)
        if wait:
            return self.refusal(wait)
        try:
            with self.lock:
                answer = getattr(self, route[0])(call)
        except Exception as exc:  # a bug in the stand-in: answer 500 and keep it for the test to see
            self.crashes.append(f"{call.method} {call.path}: {type(exc).__name__}: {exc}")
            return 500, self.error_body(500, "stand-in crashed"), {}
        status, document, *rest = answer
        return status, document, (rest[0] if rest else {})


STALL_LIMIT_S = 300.0  # a stalled answer goes out by itself after this if heal() never comes


def new_id() -> str:
    return uuid.uuid4().hex[:12]


_REASONS = {429: "Too many requests.", 500: "Internal server error.", 502: "Bad gateway.",
            503: "Service unavailable.", 504: "Gateway timeout."}
