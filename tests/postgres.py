"""The PostgreSQL database the storage tests of this test process use, when
HUB_TEST_POSTGRES_URL names a server."""
from __future__ import annotations

import atexit
import functools
import os

from sqlalchemy import create_engine, make_url, text


def postgres_url() -> str | None:
    """HUB_TEST_POSTGRES_URL for this test process, or None. Each pytest-xdist worker gets a
    database of its own, so workers never empty each other's tables."""
    given = os.environ.get("HUB_TEST_POSTGRES_URL")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", "")[:8]
    return _database_of(given, f"{worker}_{run}" if run else worker) if given and worker else given


@functools.cache
def _database_of(server_url: str, worker: str) -> str:
    """A fresh database named after the worker and its run, created once per test process and
    dropped when it ends: two suites on one server (two checkouts) never share one."""
    url = make_url(server_url)
    name = f"{url.database}_{worker}"
    _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    atexit.register(_admin, url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return url.set(database=name).render_as_string(hide_password=False)


def _admin(url, *statements: str) -> None:
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        admin.dispose()
