"""Trigger keys and insert-unique: a rule's decision is stored once, whoever decides it twice.

The key (subscriber, rule, occasion) is a unique constraint in the database. Inserts use
INSERT … ON CONFLICT DO NOTHING, so a sweep run twice, a repeated webhook or two workers
racing each other leave exactly one row; only the inserter gets it back (RETURNING), so
only one of them hands it to the outbox.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from hub.models import Trigger, now_utc

# The metric names merchants build flows on (design §5): never rename.
NAMES = ("Subscription Started", "Welcome Step", "Renewal Reminder", "Trial Ending",
         "Card Expiring", "Payment Failed", "Payment Reminder", "Payment Retry Scheduled",
         "Payment Recovered", "Subscription Cancelled", "Win Back", "Upsell Opportunity",
         "Tier Changed", "Stage Changed", "Back In Stock", "Out Of Stock")
FIRED, CANCELLED, SKIPPED = "fired", "cancelled", "skipped"
STATUSES = (FIRED, CANCELLED, SKIPPED)
KEY = ("subscriber_id", "rule", "occasion")
# Rows per INSERT statement: well under SQLite's 32,766 bound parameters (9 columns each).
CHUNK = 2000


@dataclass(frozen=True)
class TriggerKey:
    """(subscriber, rule, occasion), e.g. (42, "renewal-7d", "2026-12-01/stripe:sub_1")."""

    subscriber_id: int
    rule: str
    occasion: str

    def __post_init__(self):
        if not isinstance(self.subscriber_id, int) or self.subscriber_id <= 0:
            raise ValueError(f"subscriber_id must be a positive int, got {self.subscriber_id!r}")
        if not self.rule or len(self.rule) > 60:
            raise ValueError(f"rule must be 1-60 characters, got {self.rule!r}")
        if not self.occasion or len(self.occasion) > 120:
            raise ValueError(f"occasion must be 1-120 characters, got {self.occasion!r}")

    def __str__(self) -> str:
        return f"{self.subscriber_id}:{self.rule}:{self.occasion}"


def trigger_row(subscriber_id: int, due, inbox_event_id: int | None = None,
                status: str | None = None) -> dict:
    """The column values of a Trigger row for a rule's `Due` spec (which checked its own key)."""
    if not isinstance(subscriber_id, int) or subscriber_id <= 0:
        raise ValueError(f"subscriber_id must be a positive int, got {subscriber_id!r}")
    return {"subscriber_id": subscriber_id, "rule": due.rule, "occasion": due.occasion,
            "name": due.name, "properties": due.properties, "reason": due.reason,
            "due_at": due.due_at, "status": status or due.status, "inbox_event_id": inbox_event_id}


def _insert(session: Session, target=Trigger):
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    return insert(target).on_conflict_do_nothing(index_elements=list(KEY))


def insert_unique(session: Session, rows: Iterable[dict]) -> list[Trigger]:
    """Insert trigger rows whose key is new; returns the ORM rows actually inserted."""
    rows = list(rows)
    inserted: list[Trigger] = []
    for i in range(0, len(rows), CHUNK):
        inserted += session.scalars(_insert(session).returning(Trigger), rows[i:i + CHUNK]).all()
    return inserted


def insert_unique_bulk(session: Session, rows: Iterable[dict]) -> list[tuple]:
    """The same for large batches (sweeps): returns (id, subscriber_id, rule, occasion, status)
    of the inserted rows only, without building ORM objects."""
    rows = list(rows)
    if not rows:
        return []
    bulk = BULK.get(session.get_bind().dialect.name)
    if bulk is not None:
        return bulk(session, rows)
    table = Trigger.__table__
    stmt = _insert(session, table).returning(*[table.c[c] for c in RETURNED])
    out: list[tuple] = []
    for i in range(0, len(rows), CHUNK):
        out += [tuple(r) for r in session.execute(stmt, rows[i:i + CHUNK])]
    return out


COLUMNS = ("subscriber_id", "rule", "occasion", "name", "properties", "reason", "due_at", "status",
           "inbox_event_id", "created_at")
RETURNED = ("id", "subscriber_id", "rule", "occasion", "status")
# One statement run by the driver's executemany: multi-row VALUES batches (SQLAlchemy's
# default) cost psycopg a Python parse of every 18,000-parameter statement.
_SQL = ('INSERT INTO "trigger" ({columns}) VALUES ({marks}) '
        'ON CONFLICT (subscriber_id, rule, occasion) DO NOTHING')


def _driver_values(conn, rows: list[dict], stamp) -> list[tuple]:
    """Row tuples in COLUMNS order, converted by the columns' own types (JSON, UTC times)."""
    c = Trigger.__table__.c
    as_json = c.properties.type._cached_bind_processor(conn.dialect)
    as_time = c.due_at.type._cached_bind_processor(conn.dialect)
    times: dict = {}  # a day's triggers share a handful of due times: convert each once
    stamp = as_time(stamp)
    out = []
    for r in rows:
        due = r["due_at"]
        if due not in times:
            times[due] = as_time(due)
        out.append((r["subscriber_id"], r["rule"], r["occasion"], r["name"], as_json(r["properties"]),
                    r["reason"], times[due], r["status"], r.get("inbox_event_id"), stamp))
    return out


def _sqlite_bulk(session: Session, rows: list[dict]) -> list[tuple]:
    """SQLite: executemany (sqlite3 cannot return rows from it), then the inserted rows
    found again by id range and this call's own created_at stamp. A concurrent writer's
    rows cannot carry the same stamp and conflicting rows keep theirs, so the answer is
    exactly what this call inserted."""
    conn = session.connection()
    table = Trigger.__table__
    stamp = now_utc()
    before = conn.execute(select(func.max(table.c.id))).scalar() or 0
    sql = _SQL.format(columns=", ".join(COLUMNS), marks=", ".join("?" * len(COLUMNS)))
    cursor = conn.connection.cursor()
    try:
        cursor.executemany(sql, _driver_values(conn, rows, stamp))
    finally:
        cursor.close()
    found = select(*[table.c[c] for c in RETURNED]).where(
        table.c.id > before, table.c.created_at == stamp).order_by(table.c.id)
    return [tuple(r) for r in conn.execute(found)]


# PostgreSQL: COPY (rows encoded in C) into a temporary table, then one INSERT … SELECT
# with ON CONFLICT DO NOTHING RETURNING: about 3x faster than unnest() arrays, whose
# binary dumping psycopg does in Python.
_PG_STAGE = ('CREATE TEMP TABLE IF NOT EXISTS trigger_incoming (subscriber_id integer, rule varchar, '
             "occasion varchar, name varchar, properties json, reason text, due_at timestamptz, "
             "status varchar, inbox_event_id bigint, created_at timestamptz) ON COMMIT DROP")
# In key order: two sweeps inserting overlapping keys then lock them in the same order and
# one waits for the other, where any other order can deadlock (seen in CI).
_PG_MOVE = ('INSERT INTO "trigger" ({columns}) SELECT {columns} FROM trigger_incoming '
            "ORDER BY subscriber_id, rule, occasion "
            "ON CONFLICT (subscriber_id, rule, occasion) DO NOTHING RETURNING {returned}")


def _pg_bulk(session: Session, rows: list[dict]) -> list[tuple]:
    """PostgreSQL: COPY into a staging table, move what is new, RETURNING only that."""
    conn = session.connection()
    dumps = conn.dialect._json_serializer or json.dumps
    stamp = now_utc()
    cursor = conn.connection.cursor()
    try:
        cursor.execute(_PG_STAGE)
        cursor.execute("TRUNCATE trigger_incoming")
        with cursor.copy(f"COPY trigger_incoming ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row((r["subscriber_id"], r["rule"], r["occasion"], r["name"], dumps(r["properties"]),
                                r["reason"], r["due_at"], r["status"], r.get("inbox_event_id"), stamp))
        cursor.execute(_PG_MOVE.format(columns=", ".join(COLUMNS), returned=", ".join(RETURNED)))
        return [tuple(r) for r in cursor.fetchall()]
    finally:
        cursor.close()


BULK = {"sqlite": _sqlite_bulk, "postgresql": _pg_bulk}
