"""`hub backfill`: existing customers, subscriptions, orders and invoices through the inbox.

There is no second code path. A source's lister (webhooks/<source>/backfill.py) walks the
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
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy.orm import Session

from hub.models import BACKFILL, Checkpoint
from hub.sync.inbox import drain_inbox, receive
from hub.values import iso, utc
from webhooks import SOURCES, Envelope
from webhooks.listing import Item, Lister


def listers() -> dict[str, Lister]:
    """Every source's lister (webhooks.SOURCES), by source name."""
    return {name: source.lister for name, source in SOURCES.items() if source.lister is not None}


def configured(settings) -> list[str]:
    """The sources whose APIs the hub can list with these settings."""
    return [name for name, lister in listers().items() if lister.problem(settings) is None]


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
    limit: str | None = None  # what the platform's listing leaves out (Lister.limit)


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
                    pages=state.get("pages", 0), limit=lister.limit)
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
