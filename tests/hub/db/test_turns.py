"""PostgreSQL drainers' turns: a turn never outlives the drain that took it."""
from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DataError

from hub.db.engine import Storage
from hub.db.turns import CLAIM, DrainTurn


def _fail_in_turn(storage) -> None:
    """A batch whose statement fails after its drainer took the turn to claim."""
    with pytest.raises(DataError), storage.session() as session, DrainTurn(session):
        session.execute(text("SELECT 1 / 0"))


def _roll_back_in_turn(storage) -> None:
    """A batch rolled back inside its turn, then left normally (the drain's path when a
    batch fails as a whole and its rows are drained one by one)."""
    with storage.session() as session, DrainTurn(session):
        session.execute(text("SELECT 1"))
        session.rollback()


@pytest.mark.parametrize("leave", [_fail_in_turn, _roll_back_in_turn], ids=["error", "rollback"])
def test_a_turn_left_on_the_error_path_is_free_at_once_for_another_drainer(database_url, leave):
    if not database_url.startswith("postgresql"):
        pytest.skip("drainers take turns on PostgreSQL only (SQLite: Storage.drain_lock)")
    worker, other = Storage(database_url), Storage(database_url)
    try:
        # Two idle connections in the worker's pool, as after a drain and a pending count:
        # the connection that took the turn need not be the one handed out next.
        first, second = worker.engine.connect(), worker.engine.connect()
        first.close()
        second.close()
        leave(worker)
        with other.engine.connect() as conn:
            taken = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": CLAIM}).scalar()
            conn.execute(text("SELECT pg_advisory_unlock_all()"))
        assert taken, "another drainer would wait for a turn nobody is using"
    finally:
        worker.dispose()
        other.dispose()
