"""Drainers side by side on PostgreSQL: disjoint batches, and one person in one batch at a time.

Batches are claimed FOR UPDATE SKIP LOCKED, so two drainers never take one row. What they
could share is a person: an email or a platform's customer id named in both batches. Each
batch therefore holds a transaction advisory lock per such key (`DrainTurn.hold`) before it
reads anyone, and takes its turn to claim and lock one drainer at a time (a session advisory
lock around the claim): a batch that names someone an earlier batch holds waits for that
batch's commit, then reads the person as it left them, so one person's events are applied
in the order they were claimed and never by two transactions at once. Batches about other
people go on side by side. A batch whose people are unknown (a whole-shop erasure) holds
every person: it waits for the batches under way, and the next ones wait for it.

The turn to claim is a session lock, which a rollback does not release: a connection that
goes back to the pool while holding it (a batch rolled back inside its turn, an error before
`hold`) would stop every other drainer until it closes. The pool's reset therefore lets the
turn go (`release_turns_on_return`), and a turn is only ever unlocked on the connection
that took it.

SQLite needs none of it: one process drains at a time there (Storage.drain_lock).
"""
from __future__ import annotations

import hashlib

from sqlalchemy import event, text

from hub.db.dialect import dialect_name


def lock_number(name: str) -> int:
    """A signed 64-bit advisory lock number for `name`, the same in every process."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


CLAIM = lock_number("hub:inbox:claim")  # whose turn it is to claim and lock
EVERYONE = lock_number("hub:inbox:everyone")  # shared by every batch, exclusive for a whole-shop one
TURN = "hub.drain_turn"  # in a pooled connection's info: the DrainTurn whose CLAIM it holds


def release_turns_on_return(engine) -> None:
    """Let a turn go when its connection returns to `engine`'s pool still holding it."""

    @event.listens_for(engine, "reset")
    def _release_turn(dbapi_connection, record, state):
        if record is None or record.info.pop(TURN, None) is None or state.terminate_only:
            return  # a connection being closed loses its locks with it
        dbapi_connection.rollback()  # an aborted transaction runs no statement, not even an unlock
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock_all()")
        dbapi_connection.rollback()


class DrainTurn:
    """`with DrainTurn(session) as turn:` claim rows, then `turn.hold(keys)` before reading
    the people they name; the turn passes on once they are held (or at the block's end)."""

    def __init__(self, session):
        self.session = session
        self.on = dialect_name(session) == "postgresql"
        self._turn = False
        self._held = {}  # the info of the connection that took the turn

    def __enter__(self):
        if self.on:
            connection = self.session.connection()
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": CLAIM})
            self._held = connection.info
            self._held[TURN] = self
            self._turn = True
        return self

    def hold(self, keys, everyone: bool = False) -> None:
        """Hold the people named by `keys` (strings) until the transaction ends, waiting for
        batches under way that hold any of them; `everyone` when who is touched is unknown."""
        if not self.on:
            return
        whole = "pg_advisory_xact_lock" if everyone else "pg_advisory_xact_lock_shared"
        self.session.execute(text(f"SELECT {whole}(:k)"), {"k": EVERYONE})
        numbers = sorted({lock_number(key) for key in keys})
        if numbers:
            # In one order in every batch (sorted), so two batches never wait for each other.
            self.session.execute(text(
                "SELECT pg_advisory_xact_lock(k) FROM "
                "(SELECT k FROM unnest(CAST(:keys AS bigint[])) AS k ORDER BY k) AS keys"),
                {"keys": numbers}).all()
        self.release()

    def release(self) -> None:
        if not self._turn:
            return
        self._turn = False
        # Still ours only while the session's transaction is on the connection that took it:
        # after a rollback the pool's reset let it go, and the unlock would run elsewhere.
        if self._held.get(TURN) is self:
            del self._held[TURN]
            self.session.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": CLAIM})

    def __exit__(self, kind, *_):
        if kind is not None and self._turn:
            self._turn = False
            self.session.rollback()  # the connection goes back to the pool, whose reset lets the turn go
            return
        self.release()
