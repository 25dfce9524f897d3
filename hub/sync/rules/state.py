"""Plain inputs and outputs of the rules: state snapshots, `Due` trigger specs, calendar days.

Rules see only these frozen values (built from the database by hub/sync/rules/queries.py)
plus `now` and the parameters, so every rule is a pure function.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone, tzinfo

from hub.models import LIVE_STATUSES as LIVE
from hub.sync.triggers import CANCELLED, FIRED, NAMES, SKIPPED, STATUSES  # noqa: F401 (re-exported)

ENDED = ("canceled", "expired")
# A failed payment the platform will not try again by itself (Stripe: an open invoice whose
# next_payment_attempt is null): still owed, and the end of its dunning in `notify` mode.
RETRIES_EXHAUSTED = "retries_exhausted"
OPEN_PAYMENT = ("failed", "action_required", RETRIES_EXHAUSTED)
# Nominal days of one billing interval; a month counts its shortest length so that a
# 30-day reminder is never sent for a monthly plan.
INTERVAL_DAYS = {"day": 1, "week": 7, "month": 28, "year": 365}


@dataclass(frozen=True)
class Due:
    """One trigger a rule decided on; stored under (subscriber, rule, occasion)."""

    rule: str
    occasion: str
    name: str
    properties: dict
    reason: str
    due_at: datetime
    status: str = FIRED

    def __post_init__(self):
        if self.name not in NAMES:
            raise ValueError(f"unknown trigger name {self.name!r}")
        if self.status not in STATUSES:
            raise ValueError(f"unknown trigger status {self.status!r}")
        if not self.rule or len(self.rule) > 60 or not self.occasion or len(self.occasion) > 120:
            raise ValueError(f"rule/occasion empty or too long: {self.rule!r} {self.occasion!r}")
        if self.due_at.tzinfo is None:
            raise ValueError("due_at must be UTC-aware")


@dataclass(frozen=True)
class SubState:
    """A subscription as the rules see it."""

    id: int
    subscriber_id: int
    source: str
    source_id: str
    status: str
    plan: str | None = None
    plan_id: str | None = None
    interval: str | None = None
    interval_count: int = 1
    amount: int | None = None
    currency: str | None = None
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None
    next_renewal_at: datetime | None = None
    renewal_amount: int | None = None
    renewal_amount_at: datetime | None = None
    resumes_at: datetime | None = None
    trial_end: datetime | None = None
    cancel_at_period_end: bool = False
    canceled_at: datetime | None = None
    started_at: datetime | None = None
    usage_limit: int | None = None
    product_ids: tuple = ()
    update_payment_url: str | None = None
    charges_limit: int | None = None
    # Charges it has made (its paid payments), where counted; None where not.
    charges_made: int | None = None

    @property
    def ref(self) -> str:
        """Stable across model rebuilds (unlike the row id), so occasions never change."""
        return short_ref(self.source, self.source_id)

    @property
    def is_live(self) -> bool:
        return self.status in LIVE

    @property
    def began(self) -> bool:
        """Live at least once. One awaiting its first payment, or ended without it, has not
        begun: it is welcomed when paid, and ends no subscription if never (read where
        started_at is loaded: not by the time rules' narrower queries)."""
        return self.started_at is not None

    @property
    def interval_days(self) -> int:
        if self.interval in INTERVAL_DAYS:
            return INTERVAL_DAYS[self.interval] * max(1, self.interval_count or 1)
        if self.current_period_start and self.current_period_end:
            return max(1, (self.current_period_end - self.current_period_start).days)
        return INTERVAL_DAYS["month"]

    def properties(self) -> dict:
        """What a flow needs to talk about this subscription."""
        return {"subscription_id": self.source_id, "source": self.source, "plan": self.plan,
                "plan_id": self.plan_id, "amount": self.amount, "currency": self.currency,
                "interval": self.interval, "interval_count": self.interval_count,
                "status": self.status, "next_renewal_at": iso(self.next_renewal_at)}

    @property
    def next_charge(self) -> int | None:
        """What the next renewal will charge: the platform's notice of it, where one was for
        this very renewal, else the price."""
        if self.renewal_amount is not None and self.renewal_amount_at == self.next_renewal_at:
            return self.renewal_amount
        return self.amount


@dataclass(frozen=True)
class PaymentState:
    """An invoice or billing attempt, with what the rules need of its subscription."""

    id: int
    subscriber_id: int
    source: str
    source_id: str
    status: str
    amount: int | None = None
    currency: str | None = None
    attempt_count: int = 0
    next_retry_at: datetime | None = None
    failure_reason: str | None = None
    decline_code: str | None = None
    hard_decline: bool = False
    first_failed_at: datetime | None = None
    due_at: datetime | None = None
    paid_at: datetime | None = None
    update_payment_url: str | None = None
    subscription_source_id: str | None = None
    subscription_status: str | None = None
    plan: str | None = None
    subscription_update_payment_url: str | None = None

    @property
    def ref(self) -> str:
        return short_ref(self.source, self.source_id)

    @property
    def is_open(self) -> bool:
        """Unpaid after a failure, and its subscription (if any) still running."""
        return (self.status in OPEN_PAYMENT and self.first_failed_at is not None
                and self.subscription_status not in ENDED)

    @property
    def link(self) -> str | None:
        return self.update_payment_url or self.subscription_update_payment_url

    def properties(self) -> dict:
        return {"payment_id": self.source_id, "source": self.source, "amount": self.amount,
                "currency": self.currency, "plan": self.plan,
                "subscription_id": self.subscription_source_id,
                "attempt_count": self.attempt_count, "failure_reason": self.failure_reason,
                "decline_code": self.decline_code, "hard_decline": self.hard_decline,
                "first_failed_at": iso(self.first_failed_at),
                "platform_next_retry_at": iso(self.next_retry_at),
                "update_payment_url": self.link}


@dataclass(frozen=True)
class SubscriberState:
    """One person with everything the subscriber-level rules read."""

    id: int
    first_seen_at: datetime | None = None
    first_order_at: datetime | None = None
    last_order_at: datetime | None = None
    last_activity_at: datetime | None = None
    orders_count: int = 0
    paid_payments: int = 0
    lifetime_spend: int = 0
    currency: str | None = None
    loyalty_points: int = 0
    tier: str | None = None
    stage: str | None = None
    stage_reason: str | None = None
    health_score: int | None = None
    cards: dict = field(default_factory=dict)
    usage: tuple = ()
    subscriptions: tuple[SubState, ...] = ()
    payments: tuple[PaymentState, ...] = ()

    @property
    def live(self) -> tuple[SubState, ...]:
        return tuple(s for s in self.subscriptions if s.is_live)

    @property
    def begun(self) -> tuple[SubState, ...]:
        """The subscriptions that were live at least once (SubState.began)."""
        return tuple(s for s in self.subscriptions if s.began)

    @property
    def first_subscription(self) -> SubState | None:
        started = self.begun
        return min(started, key=lambda s: (s.started_at, s.id)) if started else None

    def link(self, source: str | None = None) -> str | None:
        """An update-payment link: a live subscription's, preferring the given source."""
        ranked = sorted(self.live, key=lambda s: (s.source != source, s.id))
        return next((s.update_payment_url for s in ranked if s.update_payment_url), None)


def short_ref(source: str, source_id: str, limit: int = 80) -> str:
    """`source:id` for occasions; ids too long for the 120-character occasion are hashed,
    so two long ids never collide on a truncated prefix."""
    ref = f"{source}:{source_id}"
    if len(ref) <= limit:
        return ref
    return f"{source}:#{hashlib.sha256(str(source_id).encode()).hexdigest()[:24]}"


# --- calendar: rules fire on the shop's calendar days -------------------------------------


@dataclass(frozen=True)
class Window:
    """The shop-calendar days a run covers (first..last inclusive) in the shop's zone."""

    first: date
    last: date
    tz: tzinfo = timezone.utc

    def __contains__(self, day: date) -> bool:
        return self.first <= day <= self.last

    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]

    def span(self, shift_days: int = 0) -> tuple[datetime, datetime]:
        """UTC [start, end) of the window moved by `shift_days`, for an indexed range query."""
        return (day_start(self.first + timedelta(days=shift_days), self.tz),
                day_start(self.last + timedelta(days=shift_days + 1), self.tz))

    @classmethod
    def today(cls, now: datetime, tz: tzinfo) -> "Window":
        day = local_day(now, tz)
        return cls(day, day, tz)


def local_day(at: datetime, tz: tzinfo) -> date:
    return at.astimezone(tz).date()


def day_start(day: date, tz: tzinfo) -> datetime:
    """The UTC instant a shop-calendar day begins."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(timezone.utc)


def days_between(earlier: datetime, now: datetime, tz: tzinfo) -> int:
    """Whole shop-calendar days from `earlier` to `now` (0 the same day)."""
    return (local_day(now, tz) - local_day(earlier, tz)).days


def iso(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    return value.isoformat()


def ago(days: int) -> str:
    return "today" if days <= 0 else "1 day ago" if days == 1 else f"{days} days ago"
