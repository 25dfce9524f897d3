"""Column types: UTC times (SQLite forgets the zone) and statuses checked against their enum."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from enum import StrEnum

from sqlalchemy import DateTime, String, TypeDecorator


class UTCDateTime(TypeDecorator):
    """Stores UTC; always returns aware datetimes (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the hub stores UTC-aware times only")
        return value.astimezone(timezone.utc)

    def bind_processor(self, dialect):
        if dialect.name == "sqlite" and _sqlite_text_format(self, dialect):
            # The same text in one step: SQLite's own processor formats each field through a
            # dict, and every drained event binds about ten times.
            return sqlite_text
        return super().bind_processor(dialect)

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


_SQLITE_DEFAULT = "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"


def _sqlite_text_format(column_type: UTCDateTime, dialect) -> bool:
    impl = column_type.impl_instance.dialect_impl(dialect)
    return getattr(impl, "_storage_format", None) == _SQLITE_DEFAULT


def sqlite_text(value):
    """UTCDateTime's value as SQLAlchemy stores it in SQLite: UTC, no zone, microseconds."""
    if value is None:
        return None
    if value.tzinfo is not _UTC:  # the hub's own times are in UTC already: no conversion
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the hub stores UTC-aware times only")
        value = value.astimezone(_UTC)
    # SQLAlchemy's own storage format, filled from the fields directly rather than through
    # a dict of them: 2.6 times faster than isoformat and a slice (~11 times per drained event).
    return _SQLITE_FIELDS % (value.year, value.month, value.day, value.hour, value.minute, value.second,
                             value.microsecond)


_UTC = timezone.utc
# The same format with its fields by position: "%04d-%02d-%02d %02d:%02d:%02d.%06d".
_SQLITE_FIELDS = re.sub(r"%\(\w+\)", "%", _SQLITE_DEFAULT)


class StatusEnum(StrEnum):
    """The statuses of one table. Its repr is the plain text, so counts keyed by status print
    as they always did (`{'processed': 1}`) in command output and logs."""

    __repr__ = str.__repr__


class Status(TypeDecorator):
    """A status column: text in the database, one StrEnum of its table in Python. Writing a
    value the enum does not name fails at the flush that writes it, so a misspelt status
    never reaches a row that a sweep would then never find."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[StatusEnum], length: int):
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value, dialect):
        return None if value is None else str.__str__(self.enum(value))

    def process_result_value(self, value, dialect):
        return None if value is None else self.enum(value)
