"""Trigger keys and insert-unique: a rule's decision is stored once, whoever decides it twice.

The key (subscriber, rule, occasion) is a unique constraint in the database. Inserts use
INSERT … ON CONFLICT DO NOTHING, so a sweep run twice, a repeated webhook or two workers
racing each other leave exactly one row; only the inserter gets it back (RETURNING), so
only one of them hands it to the outbox.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from hub.models import Trigger

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
    """The column values of a Trigger row for a rule's `Due` spec."""
    TriggerKey(subscriber_id, due.rule, due.occasion)
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
    table = Trigger.__table__
    stmt = _insert(session, table).returning(table.c.id, table.c.subscriber_id, table.c.rule,
                                      table.c.occasion, table.c.status)
    out: list[tuple] = []
    for i in range(0, len(rows), CHUNK):
        out += [tuple(r) for r in session.execute(stmt, rows[i:i + CHUNK])]
    return out
