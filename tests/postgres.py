"""The PostgreSQL database the storage tests of this test process use, when
HUB_TEST_POSTGRES_URL names a server."""
from __future__ import annotations

import functools
import os

from sqlalchemy import create_engine, make_url, text


def postgres_url() -> str | None:
    """HUB_TEST_POSTGRES_URL for this test process, or None. Each pytest-xdist worker gets a
    database of its own, so workers never empty each other's tables."""
    given = os.environ.get("HUB_TEST_POSTGRES_URL")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return _database_of(given, worker) if given and worker else given


@functools.cache
def _database_of(server_url: str, worker: str) -> str:
    """A fresh database named after the worker, created once per test process."""
    url = make_url(server_url)
    name = f"{url.database}_{worker}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)
