"""`hub backfill`: existing customers, subscriptions, orders and invoices through the inbox.

There is no second code path. A source's lister (webhooks/<source>_backfill.py) walks the
platform's paginated API and wraps every object as the webhook its topic would have sent;
the driver here stores each page in the inbox with origin "backfill" and a dedupe id made
of (object id, its updated time), then drains the inbox like a worker does. Rows with
origin "backfill" are history (hub.sync.inbox.decide): triggers are stored as skipped, so no
reminder goes out for a past occasion and no event starts a flow; profiles still update.

A page's rows are committed first, then the cursor of the next page (Checkpoint
"backfill:<source>"), so a crash or Ctrl-C never moves the cursor past an unstored page: a
second `hub backfill` continues from the last committed cursor, and the dedupe ids keep
the page being fetched again from storing anything twice.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import import_module
from typing import Callable

from sqlalchemy.orm import Session

from hub.models import BACKFILL, Checkpoint
from hub.sync.inbox import drain_inbox, receive
from hub.values import iso, utc

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


# --- listers: one per source, registered by webhooks/<source>_backfill.py ----------------

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


LISTERS: dict[str, Lister] = {}


def register(lister: Lister) -> Lister:
    """Add a source's lister to LISTERS (called by webhooks/<source>_backfill.py)."""
    LISTERS[lister.source] = lister
    return lister


def listers() -> dict[str, Lister]:
    """Every source's lister, importing webhooks/<source>_backfill.py for each source."""
    from webhooks import SOURCE_NAMES

    for name in SOURCE_NAMES:
        if name not in LISTERS:
            import_module(f"webhooks.{name}_backfill")
    return LISTERS


def configured(settings) -> list[str]:
    """The sources whose APIs the hub can list with these settings."""
    return [name for name, lister in listers().items() if lister.problem(settings) is None]


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


# --- progress ---------------------------------------------------------------------------------

class Progress:
    """Counts, rate and ETA: one line redrawn in place on a terminal, plain lines otherwise
    (at most one every `every` seconds, and at each stream's end)."""

    def __init__(self, out=None, every: float = 5.0, clock=time.monotonic):
        self.out = out or sys.stderr
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.every, self.clock = every, clock
        self.started = clock()
        self.last_line = 0.0
        self.stream_started = self.started
        self.stream_done = 0

    def start(self, label: str, done: int) -> None:
        self.stream_started, self.stream_done = self.clock(), done

    def update(self, label: str, done: int, total: int | None, pages: int, final: bool = False) -> None:
        now = self.clock()
        if not (final or self.tty or now - self.last_line >= self.every):
            return
        self.last_line = now
        line = progress_line(label, done, total, pages, done - self.stream_done, now - self.stream_started)
        if self.tty:
            self.out.write("\r" + line.ljust(100) + ("\n" if final else ""))
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        self.out.write(("\n" if self.tty else "") + text + "\n")
        self.out.flush()


def progress_line(label: str, done: int, total: int | None, pages: int, new: int, seconds: float) -> str:
    """`stripe customers  40,000/100,000  40% [########............]  1,234/s  ETA 0:48  (400 pages)`."""
    rate = new / seconds if seconds > 0 else 0.0
    parts = [f"{label:<28}"]
    if total:
        share = min(1.0, done / total)
        bar = "#" * int(share * 20)
        parts.append(f"{done:>9,}/{total:,} {share:4.0%} [{bar:<20}]")
    else:
        parts.append(f"{done:>9,}")
    parts.append(f"{rate:7,.0f}/s")
    if total and rate > 0 and done < total:
        left = int((total - done) / rate)
        parts.append(f"ETA {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}")
    parts.append(f"({pages:,} pages)")
    return "  ".join(parts)


# --- storing pages ----------------------------------------------------------------------------

def store(session: Session, source: str, items: list[Item], origin: str) -> int:
    """Insert the items into the inbox (each once per dedupe id); how many were new."""
    from webhooks import Envelope

    conn = session.connection()
    stored = 0
    for item in items:
        envelope = Envelope(event_id=item.event_id, topic=item.topic, shop=item.shop,
                            api_version=item.api_version, triggered_at=item.updated_at)
        body = json.dumps(item.payload, separators=(",", ":"), default=str).encode()
        stored += receive(conn, source, envelope, {"X-Hub-Origin": origin}, body, origin=origin)
    return stored


def load_checkpoint(session: Session, name: str) -> dict | None:
    row = session.get(Checkpoint, name)
    return dict(row.value) if row is not None else None


def save_checkpoint(session: Session, name: str, value: dict) -> None:
    row = session.get(Checkpoint, name)
    if row is None:
        session.add(Checkpoint(name=name, value=value))
    else:
        row.value = value  # a new dict: the JSON column sees the change
        row.updated_at = datetime.now(timezone.utc)


# --- the backfill -----------------------------------------------------------------------------

class Interrupted(Exception):
    """The run stopped before the end (tests and the benchmark stop it on purpose)."""


@dataclass
class Report:
    source: str
    counts: dict = field(default_factory=dict)  # stream -> objects listed
    stored: int = 0  # inbox rows new in this run
    pages: int = 0
    seconds: float = 0.0
    resumed: bool = False
    finished: bool = False
    drained: dict = field(default_factory=dict)
    waited: float = 0.0  # seconds spent waiting for the platform's rate limit


def checkpoint_name(source: str) -> str:
    return f"backfill:{source}"


def run(hub, source: str, since: datetime | None = None, restart: bool = False,
        progress: Progress | None = None, stop_after_pages: int | None = None,
        drain: bool = True) -> Report:
    """Backfill one source; resumes from its checkpoint unless `restart` (or a new `since`)."""
    lister = listers().get(source)
    if lister is None:
        raise ValueError(f"no lister for source {source!r}")
    problem = lister.problem(hub.settings)
    if problem:
        raise ValueError(f"{source}: {problem}")
    name = checkpoint_name(source)
    with hub.storage.session() as session:
        saved = load_checkpoint(session, name)
    since_text = iso(since)
    fresh = {"since": since_text, "done": [], "stream": None, "cursor": None, "counts": {},
             "pages": 0, "finished": False, "started_at": iso(datetime.now(timezone.utc))}
    resumed = bool(saved) and not restart and not saved.get("finished") \
        and (since is None or saved.get("since") == since_text)
    if resumed:
        state = saved
        since = utc(saved.get("since"))
    else:
        state = fresh
    if saved and saved.get("finished") and not restart and since is None:
        # Nothing to resume; the command says so (and that --restart imports again).
        return Report(source=source, counts=dict(saved.get("counts") or {}), pages=saved.get("pages", 0),
                      finished=True)
    report = Report(source=source, resumed=resumed, counts=dict(state.get("counts") or {}),
                    pages=state.get("pages", 0))
    progress = progress or Progress()
    client = lister.client(hub.settings)
    started = time.monotonic()
    pages_this_run = 0
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"backfill-{source}")
    try:
        for stream in lister.streams:
            if stream in state["done"]:
                continue
            cursor = state["cursor"] if state.get("stream") == stream else None
            label = f"{source} {stream}"
            done = report.counts.get(stream, 0)
            progress.start(label, done)
            # The next page is fetched while this one is stored and drained: waiting for
            # the platform's rate limit overlaps with the database work.
            pending = pool.submit(client.page, stream, cursor, since)
            total = None
            while True:
                page = pending.result()
                total = page.total or total
                pending = pool.submit(client.page, stream, page.next, since) if page.next else None
                done += len(page.items)
                report.counts[stream] = done
                report.pages += 1
                state.update(stream=stream, cursor=page.next, counts=dict(report.counts), pages=report.pages)
                if page.next is None:
                    state["done"] = [*state["done"], stream]
                    state["stream"], state["cursor"] = None, None
                with hub.storage.session() as session:
                    report.stored += store(session, source, page.items, BACKFILL)
                # The page is committed before the cursor that skips it: on SQLite the inbox
                # has a file of its own, and a crash between two files' commits must not lose
                # a page (a page stored twice is deduplicated by its ids).
                with hub.storage.session() as session:
                    save_checkpoint(session, name, dict(state))
                if drain:
                    _add(report.drained, drain_inbox(hub.storage, hub.settings))
                pages_this_run += 1
                progress.update(label, done, total, report.pages, final=page.next is None)
                if stop_after_pages is not None and pages_this_run >= stop_after_pages:
                    raise Interrupted(f"stopped after {pages_this_run} pages")
                if page.next is None:
                    break
        state["finished"] = True
        state["finished_at"] = iso(datetime.now(timezone.utc))
        with hub.storage.session() as session:
            save_checkpoint(session, name, dict(state))
        report.finished = True
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        report.seconds = time.monotonic() - started
        report.waited = getattr(getattr(client, "pacer", None), "waited", 0.0)
    return report


def _add(total: dict, counts: dict) -> None:
    for key, value in counts.items():
        total[key] = total.get(key, 0) + value
