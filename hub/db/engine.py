"""Database engine, sessions and migrations."""
from __future__ import annotations

import fcntl
import os
import threading
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from hub.config import PROJECT_DIR
from hub.db.bulk import write_new_first
from hub.db.dialect import connect_limits, plan_for_cached_rows
from hub.db.inbox import InboxWriter
from hub.db.turns import release_turns_on_return
from hub.errors import DrainerBusy
from hub.values import json_text, json_value

MIGRATIONS_DIR = PROJECT_DIR / "migrations"


class Storage:
    """One engine and session factory per process."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        write_new_first(self.sessions)
        self._inbox_writer = None
        self._memory_drain_lock = threading.Lock()
        self._drain_held = threading.local()

    @property
    def inbox_writer(self):
        """The webhook path's writer (hub.db.inbox.InboxWriter), one per process."""
        if self._inbox_writer is None:
            self._inbox_writer = InboxWriter(self.engine)
        return self._inbox_writer

    @contextmanager
    def drain_lock(self, wait: bool = True):
        """Held by the one process draining the inbox of a SQLite database at a time;
        with `wait` False, DrainerBusy at once when another holds it.

        SQLite lives on one machine, so an OS file lock serializes the drainers (their
        transactions take turns on the write lock anyway); it dies with its process.
        PostgreSQL needs none: rows are claimed FOR UPDATE SKIP LOCKED.
        """
        held = getattr(self._drain_held, "depth", 0)
        if held or not self.url.startswith("sqlite"):  # held by this thread already, or not needed
            self._drain_held.depth = held + 1
            try:
                yield
            finally:
                self._drain_held.depth = held
            return
        path = lock_path(self.url, "drain")
        if path is None:  # an in-memory database lives in this process only
            if not self._memory_drain_lock.acquire(blocking=wait):
                raise DrainerBusy("another drain is running")
            lock = _released(self._memory_drain_lock)
        else:
            lock = _file_lock(path, wait, DrainerBusy("another process is draining the inbox"))
        with lock:
            self._drain_held.depth = 1
            try:
                yield
            finally:
                self._drain_held.depth = 0

    @contextmanager
    def write_turn(self):
        """A turn at the model's write lock, for the drain's batches and the pushes.

        SQLite's own lock is not fair: a waiter polls with sleeps of up to 100 ms, and a
        drainer that commits and begins its next batch within milliseconds would keep the
        pushes out for as long as webhooks flow. An OS file lock wakes its waiter as soon
        as it is free, so drain and push take turns. No-op off SQLite files.
        """
        path = lock_path(self.url, "write")
        if path is None:
            yield
            return
        with _file_lock(path):
            yield

    @contextmanager
    def session(self):
        """A session that commits on success and rolls back on error."""
        session: Session = self.sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("select 1"))

    def upgrade(self) -> None:
        """Apply every Alembic migration not applied yet."""
        upgrade(self.engine)

    def dispose(self) -> None:
        if self._inbox_writer is not None:
            self._inbox_writer.close()
        self.engine.dispose()


@contextmanager
def _released(lock: threading.Lock):
    try:
        yield
    finally:
        lock.release()


@contextmanager
def _file_lock(path: Path, wait: bool = True, busy: Exception | None = None):
    """An exclusive OS lock on `path`, released on exit or when the process dies; with
    `wait` False, `busy` is raised at once if another holds it."""
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise busy from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def lock_path(url: str, name: str) -> Path | None:
    """`<database>-<name>.lock` beside a SQLite database file (None otherwise)."""
    inbox = inbox_path(url)
    return None if inbox is None else inbox.with_name(f"{inbox.stem.removesuffix('-inbox')}-{name}.lock")


def database_path(url: str) -> Path | None:
    """The file of a SQLite database URL (None for in-memory SQLite and other databases)."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1] if "///" in url else ""
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path)


def inbox_path(url: str) -> Path | None:
    """The SQLite file that holds the inbox beside a SQLite database file (None otherwise)."""
    path = database_path(url)
    return None if path is None else path.with_name(f"{path.stem}-inbox{path.suffix or '.db'}")


def create_private(path: Path) -> None:
    """Create `path` empty (an empty file is an empty SQLite database) and readable by its
    owner only, unless it exists. The database holds customers' emails, phones and raw
    webhooks; SQLite gives its -wal and -shm files the mode of the database file. An
    existing file keeps the mode its owner gave it."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def make_engine(url: str, busy_timeout_ms: int = 30000) -> Engine:
    """An engine; SQLite gets WAL, a busy timeout, foreign keys and the inbox's own file."""
    if url.startswith("sqlite"):
        inbox = inbox_path(url)
        if inbox is not None:
            inbox.parent.mkdir(parents=True, exist_ok=True)
            create_private(database_path(url))
            create_private(inbox)
        engine = create_engine(url, connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
                               json_serializer=json_text, json_deserializer=json_value)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # WAL lets the web process append to the inbox while a worker reads it;
            # synchronous=NORMAL is durable across process crashes in WAL mode.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
            cur.execute("PRAGMA foreign_keys=ON")
            if inbox is not None:
                # SQLite locks a whole file per writer: webhooks append to the inbox file
                # while a drain holds the model's file (migration 0002). A transaction that
                # writes both commits the model's file first, so a crash between the two
                # leaves a row pending, to be processed again (idempotently), never lost.
                cur.execute("ATTACH DATABASE ? AS inbox", (str(inbox),))
                cur.execute("PRAGMA inbox.journal_mode=WAL")
                cur.execute("PRAGMA inbox.synchronous=NORMAL")
            cur.close()

        return engine
    engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20,
                           connect_args=connect_limits(make_url(url)),
                           json_serializer=json_text, json_deserializer=json_value)
    plan_for_cached_rows(engine)
    release_turns_on_return(engine)
    return engine


def alembic_config(engine: Engine):
    from alembic.config import Config  # noqa: PLC0415 - start-up cost: only install and upgrade need Alembic

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration."""
    from alembic import command  # noqa: PLC0415 - start-up cost, as above

    command.upgrade(alembic_config(engine), "head")
