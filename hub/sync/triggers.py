"""Trigger keys and insert-unique: a rule's decision is stored once, whoever decides it twice.

The key (subscriber, rule, occasion) is a unique constraint in the database. Inserts use
INSERT … ON CONFLICT DO NOTHING, so a sweep run twice, a repeated webhook or two workers
racing each other leave exactly one row; only the inserter gets it back (RETURNING), so
only one of them hands it to the outbox.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from sqlalchemy.orm import Session

from hub.db.bulk import insert_ignore_returning
from hub.db.dialect import insert_ignore
from hub.events import MOMENT_TRIGGERS
from hub.models import Trigger, TriggerStatus

# The metric names merchants build flows on (design §5): never rename.
NAMES = ("Subscription Started", "Welcome Step", "Renewal Reminder", "Trial Ending",
         "Card Expiring", "Payment Failed", "Payment Reminder", "Payment Retry Scheduled",
         "Payment Recovered", "Subscription Cancelled", "Win Back", "Upsell Opportunity",
         "Tier Changed", "Stage Changed", "Back In Stock", "Out Of Stock", *MOMENT_TRIGGERS)
FIRED, CANCELLED, SKIPPED = TriggerStatus.FIRED, TriggerStatus.CANCELLED, TriggerStatus.SKIPPED
STATUSES = tuple(TriggerStatus)
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


def insert_unique(session: Session, rows: Iterable[dict]) -> list[Trigger]:
    """Insert trigger rows whose key is new; returns the ORM rows actually inserted."""
    rows = list(rows)
    inserted: list[Trigger] = []
    for i in range(0, len(rows), CHUNK):
        inserted += insert_ignore(session, Trigger, rows[i:i + CHUNK], KEY, returning=Trigger).scalars().all()
    return inserted


def insert_unique_bulk(session: Session, rows: Iterable[dict]) -> list[tuple]:
    """The same for large batches (sweeps): returns (id, subscriber_id, rule, occasion, status)
    of the inserted rows only, without building ORM objects."""
    return insert_ignore_returning(session, Trigger.__table__, list(rows), COLUMNS, KEY, RETURNED)


# Written by insert_unique_bulk, which stamps created_at itself.
COLUMNS = ("subscriber_id", "rule", "occasion", "name", "properties", "reason", "due_at", "status",
           "inbox_event_id")
RETURNED = ("id", "subscriber_id", "rule", "occasion", "status")
