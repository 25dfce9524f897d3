"""Database engine, sessions and migrations."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from hub.config import PROJECT_DIR

MIGRATIONS_DIR = PROJECT_DIR / "migrations"


class Storage:
    """One engine and session factory per process."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._inbox_writer = None

    @property
    def inbox_writer(self):
        """The webhook path's writer (hub.inbox.InboxWriter), one per process."""
        if self._inbox_writer is None:
            from hub.inbox import InboxWriter

            self._inbox_writer = InboxWriter(self.engine)
        return self._inbox_writer

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


def inbox_path(url: str) -> Path | None:
    """The SQLite file that holds the inbox beside a SQLite database file (None otherwise)."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1] if "///" in url else ""
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    path = Path(path)
    return path.with_name(f"{path.stem}-inbox{path.suffix or '.db'}")


def make_engine(url: str, busy_timeout_ms: int = 30000) -> Engine:
    """An engine; SQLite gets WAL, a busy timeout, foreign keys and the inbox's own file."""
    if url.startswith("sqlite"):
        inbox = inbox_path(url)
        if inbox is not None:
            inbox.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False})

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
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def alembic_config(engine: Engine):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration."""
    from alembic import command

    command.upgrade(alembic_config(engine), "head")
