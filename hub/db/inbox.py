"""The webhook path's writer of the inbox: one INSERT per webhook, committed in groups.

The raw row only (hub.sync.inbox drains it later), written on a driver connection of its own
per thread, in the column formats SQLAlchemy reads back. The web server's event loop hands
rows to write_grouped(): webhooks arriving together share one transaction (on PostgreSQL one
commit and one fsync, on the process's async connection; on SQLite one write of the pages
they share).
"""
from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timezone
from functools import lru_cache

from hub.db.dialect import connect_limits, dialect_name
from hub.db.types import sqlite_text
from hub.models import PENDING
from hub.values import json_text

# A webhook is stored once: (source, its event id) is the inbox's unique key.
KEY = ("source", "event_id")
_COLUMNS = ("source", "event_id", "topic", "headers", "body", "received_at", "triggered_at", "shop",
            "api_version", "status", "attempts", "outcome", "origin")
# The columns PostgreSQL is given as text and stores as JSON.
_CASTS = {"headers": "::json", "outcome": "::json"}
# Rows per grouped INSERT: PostgreSQL takes at most 65,535 parameters in one statement.
_GROUP_ROWS = 1000


class InboxWriter:
    """The webhook path's one INSERT, on a driver connection kept per thread.

    On the hot path SQLAlchemy's execution machinery (pool checkout, events, type
    processors) costs more than the insert itself; this writes the same row that
    hub.sync.inbox.receive() writes, in the column formats SQLAlchemy reads back.
    """

    def __init__(self, engine):
        self.engine = engine
        self.dialect = dialect_name(engine)
        self._local = threading.local()
        self._opened = []
        self._lock = threading.Lock()
        self._queue: list[_Waiter] = []
        self._leading = False
        if self.dialect == "postgresql":
            values = "(" + ", ".join(f"%s{_CASTS.get(c, '')}" for c in _COLUMNS) + ")"
        else:
            values = "(" + ", ".join("?" for _ in _COLUMNS) + ")"
        self.sql = (f"INSERT INTO inbox_event ({', '.join(_COLUMNS)}) VALUES {values} "
                    f"ON CONFLICT ({', '.join(KEY)}) DO NOTHING RETURNING id")
        # Grouped writes on an event loop: rows waiting for the next commit, the task
        # committing them, and on PostgreSQL its connection and the loop that belongs to.
        self.commits = 0  # transactions committed by write_grouped() in this process (tests read it)
        self._waiting: list[tuple[tuple, asyncio.Future]] = []
        self._committer: asyncio.Task | None = None
        self._grouped = None
        self._async_loop = None

    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.engine.raw_connection()
            if self.dialect == "sqlite":
                # Autocommit: a lone webhook's INSERT is its own transaction, without the
                # BEGIN and COMMIT statements around it (a group commit opens one itself).
                # Detached, so the pool never hands this mode to anyone else.
                conn.dbapi_connection.isolation_level = None
                conn.detach()
            self._opened.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection this writer opened (at shutdown and in tests)."""
        self._close_grouped_connection()
        for conn in self._opened:
            try:
                conn.close()
            except Exception:  # closing a broken connection may fail; it is gone either way
                pass
        self._opened.clear()
        self._local = threading.local()

    def _time(self, value: datetime | None):
        # On SQLite, the text UTCDateTime binds (the one function for both paths).
        return value if self.dialect == "postgresql" else sqlite_text(value)

    def write(self, source: str, envelope, headers: dict, body: bytes,
              origin: str = "webhook") -> bool:
        """Insert and commit the raw webhook (`envelope`: its webhooks.Envelope); True if
        new, False for a duplicate.

        Group commit: while one thread commits, webhooks arriving on other threads of
        the process queue up, and the next of them commits them all in one transaction.
        Each caller still returns only once its own row is committed.
        """
        waiter = _Waiter(self._params(source, envelope, headers, body, origin))
        with self._lock:
            self._queue.append(waiter)
            lead = not self._leading
            if lead:
                self._leading = True
            else:  # made under the lock, before a leader can take this waiter's row
                waiter.done = threading.Event()
        if not lead:
            waiter.done.wait()
            if waiter.error is not None:
                raise waiter.error
            return waiter.created
        try:
            while True:
                with self._lock:
                    batch, self._queue = self._queue, []
                    if not batch:
                        # Handed over: a webhook queued from here on leads its own commit.
                        self._leading = False
                        break
                self._commit(batch)
        except BaseException:
            # Only after an unexpected error (the thread interrupted): the webhooks queued
            # behind this leader fail fast rather than wait for a commit nobody makes.
            with self._lock:
                self._leading = False
                leftovers, self._queue = self._queue, []
            for other in leftovers:
                other.error = other.error or RuntimeError("inbox writer stopped")
                other.release()
            raise
        if waiter.error is not None:
            raise waiter.error
        return waiter.created

    def _params(self, source: str, envelope, headers: dict, body: bytes, origin: str) -> tuple:
        return (source, envelope.event_id, envelope.topic[:100], json_text(headers), body,
                self._time(datetime.now(timezone.utc)), self._time(envelope.triggered_at),
                envelope.shop, envelope.api_version, PENDING, 0, "[]", origin)

    async def write_grouped(self, source: str, envelope, headers: dict, body: bytes,
                            origin: str = "webhook") -> bool:
        """write() for a caller on an event loop: True once the row is committed, False for
        a duplicate; the error of its group's commit if that failed.

        Webhooks that arrive while a commit is under way (PostgreSQL: the loop serves other
        requests meanwhile) or in the same turn of the loop (SQLite) are committed together
        in one transaction. A failed commit stores none of the group and fails every one
        of them.

        One commit at a time per process: a webhook waits at most for the commit under way
        and its own. Committing on a connection of their own as webhooks arrived (PostgreSQL
        flushes concurrent commits together) made more commits of fewer rows each: more CPU
        per webhook here and in the server, on the cores the drain shares, and no more webhooks
        stored (benchmarks/RESULTS.md, "One commit at a time").
        """
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        self._waiting.append((self._params(source, envelope, headers, body, origin), answer))
        committer = self._committer
        if committer is None or committer.done() or committer.get_loop() is not loop:
            commit = self._commit_waiting if self.dialect == "postgresql" else self._commit_on_loop
            self._committer = loop.create_task(commit())
        return await answer

    async def _commit_waiting(self) -> None:
        """Commit groups of waiting rows on the writer's connection until none wait (PostgreSQL)."""
        while self._waiting:
            group, self._waiting = self._waiting[:_GROUP_ROWS], self._waiting[_GROUP_ROWS:]
            # In key order, as every group: two transactions inserting the same webhooks
            # (a platform's retries) then wait for each other in one order, never deadlock.
            group.sort(key=lambda waiting: waiting[0][:2])
            try:
                conn = await self._grouped_connection()
                # One statement in autocommit, its own transaction: one round trip, and
                # it returns once committed (the driver waits for the server's
                # ReadyForQuery, sent after the commit).
                async with conn.cursor() as cursor:
                    await cursor.execute(_grouped_insert(len(group)),
                                         [value for params, _ in group for value in params])
                    created = {tuple(row) for row in await cursor.fetchall()}
            except Exception as exc:
                # Nothing of the group is stored: each of its webhooks is answered with the
                # error (503, the platform retries), and the connection is not reused.
                self._close_grouped_connection()
                for _, answer in group:
                    if not answer.done():
                        answer.set_exception(exc)
                continue
            except BaseException:  # cancelled: the server is stopping
                self._close_grouped_connection()
                stopped = RuntimeError("inbox writer stopped")
                for _, answer in group + self._waiting:
                    if not answer.done():
                        answer.set_exception(stopped)
                self._waiting = []
                raise
            self.commits += 1
            for params, answer in group:
                key = (params[0], params[1])
                # The first of a group's webhooks with one key made the row; any other is its duplicate.
                new = key in created
                created.discard(key)
                if not answer.done():
                    answer.set_result(new)

    async def _commit_on_loop(self) -> None:
        # SQLite's driver has no async interface and a WAL commit is short: it runs on the
        # loop, once the requests read in the same turn of the loop have queued their rows.
        group, self._waiting = self._waiting, []
        waiters = [_Waiter(params) for params, _ in group]
        self._commit(waiters)
        self.commits += 1
        for waiter, (_, answer) in zip(waiters, group):
            if answer.done():
                continue
            if waiter.error is not None:
                answer.set_exception(waiter.error)
            else:
                answer.set_result(waiter.created)

    async def _grouped_connection(self):
        """The writer's connection on the running event loop, opened when it has none."""
        loop = asyncio.get_running_loop()
        if self._async_loop is not loop:  # a connection belongs to the loop it was opened on
            self._close_grouped_connection()
            self._async_loop = loop
        if self._grouped is None or self._grouped.closed:
            import psycopg  # noqa: PLC0415 - start-up cost: only a PostgreSQL hub needs the driver

            url = self.engine.url.set(drivername="postgresql")
            # Raw cursors send the statement as it is, with PostgreSQL's own $n placeholders:
            # psycopg parses a statement of %s placeholders in Python at each execution once it
            # is past its cache's size (4096 characters or 50 parameters), which a group's
            # INSERT is from 4 rows on. https://www.psycopg.org/psycopg3/docs/advanced/cursors.html
            self._grouped = await psycopg.AsyncConnection.connect(
                url.render_as_string(hide_password=False), autocommit=True,
                cursor_factory=psycopg.AsyncRawCursor, **connect_limits(url))
        return self._grouped

    def _close_grouped_connection(self) -> None:
        _close(self._grouped)
        self._grouped = None

    def _commit(self, batch: list["_Waiter"]) -> None:
        conn = None
        try:
            # Opened inside: a connection that cannot be opened fails the batch's webhooks
            # (503, the platform retries) instead of leaving them waiting.
            conn = self._connection()
            cursor = conn.cursor()
            grouped = self.dialect == "sqlite" and len(batch) > 1
            if grouped:
                cursor.execute("BEGIN")
            for waiter in batch:
                cursor.execute(self.sql, waiter.params)
                # Read to the end: in autocommit the INSERT commits once its statement is done.
                waiter.created = bool(cursor.fetchall())
            if grouped:
                cursor.execute("COMMIT")
            cursor.close()
            if self.dialect != "sqlite":
                conn.commit()
        except Exception as exc:
            # A broken connection is not reused: the next request opens a fresh one. Rolled
            # back and closed first: a detached SQLite connection left with the group's open
            # transaction would keep the inbox's write lock from every other writer.
            self._local.conn = None
            releases = () if conn is None else (conn.dbapi_connection.rollback, conn.dbapi_connection.close,
                                                conn.invalidate)
            for release in releases:
                try:
                    release()
                except Exception:  # already unusable; nothing more to release
                    pass
            for waiter in batch:
                waiter.error = exc
        finally:
            for waiter in batch:
                waiter.release()


class _Waiter:
    __slots__ = ("params", "done", "created", "error")

    def __init__(self, params: tuple):
        self.params = params
        # Only a webhook that waits for another thread's commit needs an event to wait on;
        # the leader commits its own row (with one thread per process, every webhook does).
        self.done: threading.Event | None = None
        self.created = False
        self.error: Exception | None = None

    def release(self) -> None:
        if self.done is not None:
            self.done.set()


@lru_cache(maxsize=_GROUP_ROWS)
def _grouped_insert(rows: int) -> str:
    """PostgreSQL's INSERT of `rows` rows in $n placeholders, built once per size (the same
    text each time also lets psycopg prepare it once it has run a few times)."""
    width = len(_COLUMNS)
    groups = ("(" + ", ".join(f"${row * width + i + 1}{_CASTS.get(column, '')}"
                              for i, column in enumerate(_COLUMNS)) + ")" for row in range(rows))
    return (f"INSERT INTO inbox_event ({', '.join(_COLUMNS)}) VALUES {', '.join(groups)} "
            f"ON CONFLICT ({', '.join(KEY)}) DO NOTHING RETURNING {', '.join(KEY)}")


def _close(conn) -> None:
    """Close an async connection at the driver's level: its loop may be gone already."""
    if conn is not None:
        conn.pgconn.finish()
