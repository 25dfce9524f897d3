"""The subscriber model: one person, their subscriptions, payments and orders."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint, and_
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column, relationship

from hub.db.types import Status, StatusEnum
from hub.models.base import Base, now_utc
from hub.values import plan_unknown


class SubscriptionStatus(StatusEnum):
    """Every platform's subscription states, mapped onto these by its normalizer."""

    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    PAUSED = "paused"
    # Created before its first payment, and not live until it is paid: no welcome, no
    # reminders, and no cancellation or win-back if it never is (Stripe's `incomplete`).
    INCOMPLETE = "incomplete"
    CANCELED = "canceled"
    EXPIRED = "expired"


class PaymentStatus(StatusEnum):
    NEW = "new"  # created by an event that named no outcome yet
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the platform may retry it
    ACTION_REQUIRED = "action_required"  # the customer must confirm (3-D Secure)
    RETRIES_EXHAUSTED = "retries_exhausted"  # failed, no retry to come
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"  # written off


STATUSES = tuple(SubscriptionStatus)
LIVE_STATUSES = (SubscriptionStatus.TRIALING, SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE,
                 SubscriptionStatus.PAUSED)


class Subscriber(Base):
    __tablename__ = "subscriber"
    # The daily lifecycle sweep finds recency and tenure boundaries by range on these
    # (hub.sync.rules.queries.lifecycle_candidates).
    __table_args__ = (Index("ix_subscriber_last_activity", "last_activity_at"),
                      Index("ix_subscriber_first_order", "first_order_at"),
                      Index("ix_subscriber_first_seen", "first_seen_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    phone: Mapped[str | None] = mapped_column(String(20))
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    shopify_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    chargebee_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    recharge_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    # {"email": {"state": "subscribed", "source": "shopify", "at": iso, "opt_in_level": ...}, "sms": {...}}
    consent: Mapped[dict] = mapped_column(default=dict)
    first_seen_at: Mapped[datetime] = mapped_column(default=now_utc)
    first_order_at: Mapped[datetime | None]
    last_order_at: Mapped[datetime | None]
    orders_count: Mapped[int] = mapped_column(default=0)
    lifetime_spend: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str | None] = mapped_column(String(3))
    last_activity_at: Mapped[datetime | None]
    loyalty_points: Mapped[int] = mapped_column(default=0)
    tier: Mapped[str | None] = mapped_column(String(20))
    stage: Mapped[str | None] = mapped_column(String(20), index=True)
    stage_reason: Mapped[str | None] = mapped_column(String(200))
    health_score: Mapped[int | None]
    # Cards on file: {"<source>:<id>": {"brand", "last4", "exp_month", "exp_year", "auto_updated"}}
    cards: Mapped[dict] = mapped_column(default=dict)
    # Usage reports for upsell rules: [{"at": iso, "quantity": n, "metric": str}]
    usage: Mapped[list] = mapped_column(default=list)
    profile_updated_at: Mapped[datetime | None]
    erased_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=now_utc)
    updated_at: Mapped[datetime] = mapped_column(default=now_utc, onupdate=now_utc)

    subscriptions: Mapped[list["Subscription"]] = relationship(back_populates="subscriber", order_by="Subscription.id")
    payments: Mapped[list["Payment"]] = relationship(back_populates="subscriber", order_by="Payment.id")
    orders: Mapped[list["Order"]] = relationship(back_populates="subscriber", order_by="Order.id")

    @property
    def name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p)

    def source_id(self, source: str) -> str | None:
        return getattr(self, f"{source}_customer_id", None)


class Subscription(Base):
    __tablename__ = "subscription"
    # One index per sweep query (hub.sync.rules.queries): renewals, trials ending, cancellations
    # (win back) and starts (welcome steps, tenure) are each a range scan on a day.
    __table_args__ = (UniqueConstraint("source", "source_id"),
                      Index("ix_subscription_renewal", "status", "next_renewal_at"),
                      Index("ix_subscription_trial", "status", "trial_end"),
                      Index("ix_subscription_ended", "status", "canceled_at"),
                      Index("ix_subscription_started", "started_at"),
                      Index("ix_subscription_ending", "cancel_at_period_end", "current_period_end"))

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscriber.id"), index=True)
    source: Mapped[str] = mapped_column(String(20))
    source_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[SubscriptionStatus] = mapped_column(Status(SubscriptionStatus, 20))
    plan: Mapped[str | None] = mapped_column(String(200))
    plan_id: Mapped[str | None] = mapped_column(String(200))
    interval: Mapped[str | None] = mapped_column(String(10))
    interval_count: Mapped[int] = mapped_column(default=1)
    amount: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    quantity: Mapped[int] = mapped_column(default=1)
    current_period_start: Mapped[datetime | None]
    current_period_end: Mapped[datetime | None]
    next_renewal_at: Mapped[datetime | None]
    # What the platform's notice of a renewal said it will charge, and the renewal it is for
    # (a price phase or a discount ending make it differ from `amount`).
    renewal_amount: Mapped[int | None] = mapped_column(BigInteger)
    renewal_amount_at: Mapped[datetime | None]
    trial_end: Mapped[datetime | None]
    # When a paused subscription collects payment again, if the platform says.
    resumes_at: Mapped[datetime | None]
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False)
    canceled_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    usage_limit: Mapped[int | None]
    # The number of charges after which the subscription expires (Recharge), if it does.
    charges_limit: Mapped[int | None]
    product_ids: Mapped[list] = mapped_column(default=list)
    update_payment_url: Mapped[str | None] = mapped_column(Text)
    source_updated_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=now_utc)

    subscriber: Mapped[Subscriber | None] = relationship(back_populates="subscriptions")

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_STATUSES

    @hybrid_property
    def known_by_ids_alone(self) -> bool:
        """The hub never learned this subscription's plan (no plan, plan id or price): a Shopify
        contract webhook applied by what it carries, its contract not readable then."""
        return plan_unknown(self.plan, self.plan_id, self.amount)

    @known_by_ids_alone.inplace.expression
    @classmethod
    def _known_by_ids_alone_in_sql(cls):
        return and_(cls.plan.is_(None), cls.plan_id.is_(None), cls.amount.is_(None))


class Payment(Base):
    __tablename__ = "payment"
    # Dunning sweep: unpaid failed payments by day of first failure.
    __table_args__ = (UniqueConstraint("source", "source_id"),
                      Index("ix_payment_open", "status", "first_failed_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscriber.id"), index=True)
    subscription_id: Mapped[int | None] = mapped_column(ForeignKey("subscription.id"))
    source: Mapped[str] = mapped_column(String(20))
    source_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[PaymentStatus] = mapped_column(Status(PaymentStatus, 30))
    amount: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    attempt_count: Mapped[int] = mapped_column(default=0)
    next_retry_at: Mapped[datetime | None]
    failure_reason: Mapped[str | None] = mapped_column(Text)
    decline_code: Mapped[str | None] = mapped_column(String(64))
    hard_decline: Mapped[bool] = mapped_column(default=False)
    first_failed_at: Mapped[datetime | None]
    due_at: Mapped[datetime | None]
    paid_at: Mapped[datetime | None]
    update_payment_url: Mapped[str | None] = mapped_column(Text)
    # The store order a paid payment made (Shopify's order id): the renewal's money is counted
    # by whichever of the payment and the order arrives first, never by both.
    order_source_id: Mapped[str | None] = mapped_column(String(255), index=True)
    source_updated_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=now_utc)

    subscriber: Mapped[Subscriber | None] = relationship(back_populates="payments")


class Order(Base):
    __tablename__ = "shop_order"
    __table_args__ = (UniqueConstraint("source", "source_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscriber.id"), index=True)
    source: Mapped[str] = mapped_column(String(20))
    # Indexed alone: a subscription app's order and the store's name the same store order id.
    source_id: Mapped[str] = mapped_column(String(255), index=True)
    number: Mapped[str | None] = mapped_column(String(64), index=True)
    total: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str | None] = mapped_column(String(3))
    financial_status: Mapped[str | None] = mapped_column(String(30))
    is_subscription: Mapped[bool] = mapped_column(default=False)
    cancelled: Mapped[bool] = mapped_column(default=False)
    paid: Mapped[bool] = mapped_column(default=False)
    placed_at: Mapped[datetime | None]
    line_items: Mapped[list] = mapped_column(default=list)
    source_updated_at: Mapped[datetime | None]

    subscriber: Mapped[Subscriber | None] = relationship(back_populates="orders")


class OrderRefunds(Base):
    """What each source says one paid order (or payment) has given back, and what of it the
    hub has taken off lifetime spend.

    A refund can reach the hub from two sources (Recharge's charge/refunded and Shopify's
    refunds/create name one Shopify order), in any order, before or after the money it gives
    back, and again on a replay. `reported` keeps per source either its running total
    (`{"total": n}`) or its single refunds by key (`{"<refund id>@<time>": n}`); the order's
    refund is the largest source's sum, and `counted` is how much of that was subtracted.
    """

    __tablename__ = "order_refunds"

    id: Mapped[int] = mapped_column(primary_key=True)
    # The order or payment the refund gives back on, as the refunding source names it.
    order_source_id: Mapped[str] = mapped_column(String(255), unique=True)
    reported: Mapped[dict] = mapped_column(default=dict)
    counted: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str | None] = mapped_column(String(3))


class Merge(Base):
    """A logged identity decision: two records found to be one person."""

    __tablename__ = "merge"

    id: Mapped[int] = mapped_column(primary_key=True)
    kept_id: Mapped[int] = mapped_column(Integer, index=True)
    merged_id: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=now_utc)
