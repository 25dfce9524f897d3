"""Declarative base shared by every model; its times are UTCDateTime (hub.db.types)."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, MetaData
from sqlalchemy.orm import DeclarativeBase

from hub.db.types import UTCDateTime

__all__ = ["NAMING", "Base", "UTCDateTime", "now_utc"]


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict: JSON, list: JSON}


def now_utc() -> datetime:
    return datetime.now(timezone.utc)
