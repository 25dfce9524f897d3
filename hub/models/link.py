"""Stable customer links: what a `/l/<token>` URL in a trigger stands for, and its clicks."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, Select, String, select
from sqlalchemy.orm import Mapped, mapped_column

from hub.models.base import Base, now_utc

# What a link lets the customer do; each platform turns it into its own page or flow.
UPDATE_PAYMENT, MANAGE_SUBSCRIPTION, CANCEL = "update_payment", "manage_subscription", "cancel"
RENEW = "renew"  # keep a subscription set to end at period end (Renew Now)
PURPOSES = (UPDATE_PAYMENT, MANAGE_SUBSCRIPTION, CANCEL, RENEW)

# Click outcomes.
REDIRECTED, EXPIRED, PLATFORM_FAILED = "redirected", "expired", "failed"


class CustomerLink(Base):
    """One link put in one trigger. The token is random (secrets.token_urlsafe): it names
    the row and nothing else, so a URL in an inbox reveals no customer id and cannot be
    guessed or altered into another customer's link. The platform page is made at the
    click, because platform sessions (Stripe's portal) expire within minutes."""

    __tablename__ = "customer_link"

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    # One link per trigger: a repeated webhook or sweep finds the trigger's and makes none.
    trigger_id: Mapped[int | None] = mapped_column(Integer, unique=True)
    subscriber_id: Mapped[int] = mapped_column(Integer)
    purpose: Mapped[str] = mapped_column(String(30))
    source: Mapped[str] = mapped_column(String(20))
    customer_id: Mapped[str] = mapped_column(String(255))
    subscription_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=now_utc)


class LinkClick(Base):
    """A click on a customer link, shown on the subscriber's timeline."""

    __tablename__ = "link_click"
    __table_args__ = (Index("ix_link_click_subscriber", "subscriber_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    link_id: Mapped[int] = mapped_column(Integer)
    subscriber_id: Mapped[int] = mapped_column(Integer)
    purpose: Mapped[str] = mapped_column(String(30))
    source: Mapped[str] = mapped_column(String(20))
    # What the customer was sent to, as the platform names it ("Stripe portal").
    page: Mapped[str | None] = mapped_column(String(40))
    outcome: Mapped[str] = mapped_column(String(12))
    clicked_at: Mapped[datetime] = mapped_column(default=now_utc)

    @classmethod
    def latest(cls, subscriber_id: int, limit: int) -> Select:
        """The subscriber's newest clicks first (the timeline reads them)."""
        return select(cls).where(cls.subscriber_id == subscriber_id).order_by(cls.id.desc()).limit(limit)

    @property
    def description(self) -> str:
        """"Link clicked: update payment (Stripe portal)", with what went wrong if anything."""
        text = f"Link clicked: {self.purpose.replace('_', ' ')}" + (f" ({self.page})" if self.page else "")
        return text + {EXPIRED: " — the link had expired", PLATFORM_FAILED: " — the platform did not answer"}.get(
            self.outcome, "")
