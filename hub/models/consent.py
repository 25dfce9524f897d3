"""The last consent drift report: one row per person, tool and channel where the tool holds
another marketing consent than the source of truth (hub.ops.consent)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hub.models.base import Base, now_utc


class ConsentDrift(Base):
    __tablename__ = "consent_drift"
    # The dashboard counts, and the sync log lists, withdrawn consents a tool still mails to.
    __table_args__ = (Index("ix_consent_drift_kind", "kind", "subscriber_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(Integer, index=True)
    connector: Mapped[str] = mapped_column(String(30))
    channel: Mapped[str] = mapped_column(String(10))  # email | sms
    # "still_subscribed": withdrawn at the source, subscribed in the tool;
    # "not_subscribed": given at the source, not subscribed in the tool.
    kind: Mapped[str] = mapped_column(String(20))
    source: Mapped[str | None] = mapped_column(String(30))  # where consent was last given or withdrawn
    source_state: Mapped[str] = mapped_column(String(20))
    source_at: Mapped[datetime | None]
    tool_state: Mapped[str] = mapped_column(String(20))
    tool_since: Mapped[datetime | None]  # when the tool recorded its state, when it says
    # The tool's state is newer than the source's: the person changed it there (an unsubscribe
    # link in a mail), so --fix leaves it alone.
    tool_newer: Mapped[bool] = mapped_column(default=False)
    fix_delivery_id: Mapped[int | None] = mapped_column(Integer)  # the delivery --fix planned
    found_at: Mapped[datetime] = mapped_column(default=now_utc)
