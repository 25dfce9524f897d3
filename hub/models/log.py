"""The sync-log tables: what came in, what the hub decided, what each tool answered."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    select,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from hub.db.types import Status, StatusEnum
from hub.models.base import Base, now_utc


class InboxStatus(StatusEnum):
    PENDING = "pending"  # stored, not applied yet
    PROCESSED = "processed"
    IGNORED = "ignored"  # a topic or an event the hub has nothing to do with
    FAILED = "failed"  # its error is kept; `hub replay` tries it again


class TriggerStatus(StatusEnum):
    FIRED = "fired"
    CANCELLED = "cancelled"  # a moved renewal date took the reminder back
    SKIPPED = "skipped"  # history: decided for the record, never sent


class DeliveryStatus(StatusEnum):
    QUEUED = "queued"
    SENT = "sent"
    RETRYING = "retrying"
    DEAD = "dead"  # the tool refused it, or every retry was spent
    CANCELLED = "cancelled"  # superseded by a newer delivery of the same thing


class AttemptOutcome(StatusEnum):
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    # A push that stopped (worker killed) before the tool's answer was recorded: the tool may
    # or may not have the delivery, and the next push sends it again.
    INTERRUPTED = "interrupted"


PENDING, PROCESSED, IGNORED, FAILED = (InboxStatus.PENDING, InboxStatus.PROCESSED, InboxStatus.IGNORED,
                                       InboxStatus.FAILED)
OPEN_STATUSES = (PENDING, FAILED)
# InboxEvent.pending_oldest_first reads pending as the open status after failed.
assert sorted(OPEN_STATUSES) == [FAILED, PENDING]
QUEUED, SENT, RETRYING, DEAD, CANCELLED = (DeliveryStatus.QUEUED, DeliveryStatus.SENT, DeliveryStatus.RETRYING,
                                           DeliveryStatus.DEAD, DeliveryStatus.CANCELLED)
INTERRUPTED = AttemptOutcome.INTERRUPTED


def _in_literally(column, values):
    """`column IN (values)` with the values written into the statement, not bound: a partial
    index's condition that SQLite, and a PostgreSQL generic plan, match to the query only then."""
    return column.in_(bindparam(None, list(values), expanding=True, literal_execute=True, unique=True))


class InboxEvent(Base):
    """A webhook exactly as it arrived (raw headers and body) and what became of it."""

    __tablename__ = "inbox_event"
    # Every index is paid for on the webhook path (each is written at commit), so the
    # ones that only serve some rows are partial: just the rows the queries look for.
    # Queries repeat the index's condition (InboxEvent.is_open()) so SQLite uses it.
    __table_args__ = (
        UniqueConstraint("source", "event_id"),
        Index("ix_inbox_event_open", "status", "id",
              sqlite_where=text("status IN ('pending', 'failed')"),
              postgresql_where=text("status IN ('pending', 'failed')")),
        Index("ix_inbox_event_subscriber", "subscriber_id", "id",
              sqlite_where=text("subscriber_id IS NOT NULL"),
              postgresql_where=text("subscriber_id IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    source: Mapped[str] = mapped_column(String(20))
    event_id: Mapped[str] = mapped_column(String(255))
    topic: Mapped[str] = mapped_column(String(100))
    headers: Mapped[dict] = mapped_column(default=dict)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(default=now_utc)
    triggered_at: Mapped[datetime | None]
    shop: Mapped[str | None] = mapped_column(String(255))
    api_version: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[InboxStatus] = mapped_column(Status(InboxStatus, 12), default=PENDING)
    error: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    subscriber_id: Mapped[int | None] = mapped_column(Integer)
    # Canonical events it became and what each changed, for the timeline.
    outcome: Mapped[list] = mapped_column(default=list)
    # "webhook", "backfill", "reconciliation", "api"
    origin: Mapped[str] = mapped_column(String(20), default="webhook")
    # A failed row whose platform did not answer: when the backstop opens it again by itself
    # (hub.sync.inbox.reopen_waiting). None for a failure only a replay can mend.
    retry_at: Mapped[datetime | None]

    @classmethod
    def is_open(cls):
        """The condition of ix_inbox_event_open, for queries that want that index.

        Rendered with literal values: SQLite uses a partial index only when the query's
        condition matches the index's text, which bound parameters never do.
        """
        return _in_literally(cls.status, OPEN_STATUSES)

    @classmethod
    def pending_oldest_first(cls, query):
        """`query` narrowed to pending rows, oldest first, read through ix_inbox_event_open
        whatever PostgreSQL's statistics say.

        Pending is asked as "open, and after failed" and ordered by the index's own
        (status, id), an order no other index gives. Compared with a constant, status would
        drop out of the order, and with statistics taken at a burst's start (most rows still
        pending) the planner takes the primary key, or the whole table, as the cheapest way to
        the first rows: past every row processed since, at every look.
        """
        return query.where(cls.is_open(), cls.status > FAILED).order_by(cls.status, cls.id)

    @classmethod
    def open_in_index_order(cls, *columns, where=()):
        """`columns` of the open rows (narrowed by `where`), a subquery read in
        ix_inbox_event_open's own order (status, id), an order no other index or scan gives:
        counted from it, PostgreSQL reads that index whatever its statistics say. Taken at a
        burst's start (most rows open), they make the whole table look cheaper to count, and
        every health check, scrape and page would read it until the next ANALYZE."""
        return (select(*columns).where(cls.is_open(), *where)
                .order_by(cls.status, cls.id).subquery())

    @classmethod
    def is_waiting(cls):
        """Failed rows whose platform did not answer, which the hub opens again by itself
        (hub.sync.inbox.reopen_waiting); within ix_inbox_event_open."""
        return and_(cls.is_open(), cls.status == FAILED, cls.retry_at.is_not(None))


class Trigger(Base):
    """A rule's decision; (subscriber, rule, occasion) is unique so nothing fires twice."""

    __tablename__ = "trigger"
    __table_args__ = (UniqueConstraint("subscriber_id", "rule", "occasion"),
                      Index("ix_trigger_subscriber_id", "subscriber_id", "id"),
                      Index("ix_trigger_due", "status", "due_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(Integer)
    rule: Mapped[str] = mapped_column(String(60))
    occasion: Mapped[str] = mapped_column(String(120))
    name: Mapped[str] = mapped_column(String(60))
    properties: Mapped[dict] = mapped_column(default=dict)
    reason: Mapped[str | None] = mapped_column(Text)
    due_at: Mapped[datetime | None]
    status: Mapped[TriggerStatus] = mapped_column(Status(TriggerStatus, 12), default=TriggerStatus.FIRED)
    inbox_event_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=now_utc)

    @property
    def key(self) -> str:
        return f"{self.subscriber_id}:{self.rule}:{self.occasion}"


class Delivery(Base):
    """One action for one connector: a profile update or a trigger to send."""

    __tablename__ = "delivery"
    __table_args__ = (UniqueConstraint("connector", "idempotency_key"),
                      Index("ix_delivery_queue", "connector", "status", "next_attempt_at"),
                      Index("ix_delivery_subscriber", "subscriber_id", "id"),
                      # PostgreSQL alone (migration 0018): a push's due deliveries, in its order.
                      Index("ix_delivery_due", "connector", "next_attempt_at", "id",
                            postgresql_where=text("status IN ('queued', 'retrying')")).ddl_if(dialect="postgresql"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    connector: Mapped[str] = mapped_column(String(30))
    kind: Mapped[str] = mapped_column(String(20))  # profile | event | consent | erase
    subscriber_id: Mapped[int | None] = mapped_column(Integer)
    trigger_id: Mapped[int | None] = mapped_column(ForeignKey("trigger.id"))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict] = mapped_column(default=dict)
    status: Mapped[DeliveryStatus] = mapped_column(Status(DeliveryStatus, 12), default=QUEUED)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=now_utc)
    last_error: Mapped[str | None] = mapped_column(Text)
    history: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=now_utc)
    sent_at: Mapped[datetime | None]
    # When the push now sending it claimed it (its lease token); cleared with the outcome.
    # Still set when a push claims it again: the claimer stopped before the tool's answer.
    claimed_at: Mapped[datetime | None]

    attempts_log: Mapped[list["DeliveryAttempt"]] = relationship(
        back_populates="delivery", order_by="DeliveryAttempt.id")

    @classmethod
    def is_open(cls):
        """Still to be sent (queued or retrying): the condition of ix_delivery_due, rendered
        with literal values, which a prepared statement's generic plan can match to the index
        as it cannot match bound parameters."""
        return _in_literally(cls.status, (QUEUED, RETRYING))


class ProfileDue(Base):
    """A profile a slower tool is owed, planned as its push makes room (hub.sync.outbox).

    The drain marks the person here, once per tool however often they change meanwhile; the
    tool's push plans a Delivery from the person's state at that moment. A tool that takes a
    few requests a second then costs the drain one narrow row per change, and gets one update
    per person however many changes waited."""

    __tablename__ = "profile_due"
    __table_args__ = (Index("ix_profile_due_order", "connector", "marked_at"),)

    connector: Mapped[str] = mapped_column(String(30), primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # First marked: a person who keeps changing keeps their place in the line.
    marked_at: Mapped[datetime] = mapped_column(default=now_utc)


class RetryAsk(Base):
    """An orchestrated retry the platform is still to be asked for (hub.sync.retries).

    Written in the transaction that fires its trigger, so a worker killed before the call
    leaves it here to be asked; removed once the platform answered (charged, declined or
    refused). `due_at` is when to ask next: now, after a failure that left no answer, or
    when the lease of an ask in flight runs out."""

    __tablename__ = "retry_ask"
    __table_args__ = (Index("ix_retry_ask_due", "due_at"),)

    trigger_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    payment_id: Mapped[int] = mapped_column(Integer)
    # The trigger's reason before any answer: each answer rewrites it as reason; answer.
    reason: Mapped[str | None] = mapped_column(Text)
    due_at: Mapped[datetime] = mapped_column(default=now_utc)
    tries: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=now_utc)


class DeliveryAttempt(Base):
    """One call to a tool for a delivery: status, latency, the tool's words."""

    __tablename__ = "delivery_attempt"
    # /metrics counts interrupted pushes on every scrape: a partial index holds just those.
    __table_args__ = (Index("ix_delivery_attempt_interrupted", "delivery_id",
                            sqlite_where=text(f"outcome = '{INTERRUPTED}'"),
                            postgresql_where=text(f"outcome = '{INTERRUPTED}'")),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("delivery.id"), index=True)
    at: Mapped[datetime] = mapped_column(default=now_utc)
    outcome: Mapped[AttemptOutcome] = mapped_column(Status(AttemptOutcome, 12))
    http_status: Mapped[int | None]
    latency_ms: Mapped[int | None]
    request_id: Mapped[str | None] = mapped_column(String(120))
    retry_after: Mapped[float | None]
    message: Mapped[str | None] = mapped_column(Text)

    delivery: Mapped[Delivery] = relationship(back_populates="attempts_log")


# Inbox rows' origin besides "webhook": history listed by `hub backfill`, and changes the
# webhooks missed that reconciliation found.
BACKFILL, RECONCILIATION = "backfill", "reconciliation"

# Checkpoint name of the flag set by Shopify's app/uninstalled: no call goes to the shop after it.
UNINSTALLED = "shopify:uninstalled"


class Checkpoint(Base):
    """Where a long job (backfill, reconciliation) got to, so it can resume."""

    __tablename__ = "checkpoint"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[dict] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=now_utc, onupdate=now_utc)
