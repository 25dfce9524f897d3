"""The inbox: webhooks stored as they came, then drained in batches by workers.

receive() runs in the web process and only writes the raw row. drain_inbox() runs
in workers: normalize → apply → rules → outbox, a claimed batch at a time in one
savepoint; a batch in which a row fails is redone row by row (a savepoint each), so a
bad row is marked failed without undoing or blocking the others.
"""
from __future__ import annotations

import logging
import time
import traceback as tb
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, defer
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.base import instance_state

from hub.db.bulk import take_write_lock, update_by_key, write_changed, write_new
from hub.db.dialect import insert_ignore, locks_claimed_rows, plan_for_values
from hub.db.inbox import KEY
from hub.db.turns import DrainTurn
from hub.db.unit import UnitOfWork
from hub.errors import RetryLater
from hub.events import SUBSCRIBER_ERASE
from hub.models import FAILED, IGNORED, PENDING, PROCESSED, Checkpoint, InboxEvent, Subscriber
from hub.sync import identity, outbox, rules
from hub.sync.apply import CREATES, apply_event
from hub.sync.outbox import planned_connectors
from hub.sync.readmodel import EARLIER
from hub.values import json_value, normalize_email
from webhooks import UNREADABLE, Envelope, get_source

log = logging.getLogger(__name__)

# Headers that carry credentials are not kept (Chargebee sends basic auth).
_DROPPED_HEADERS = {"authorization", "cookie"}


def stored_headers(headers) -> dict:
    """The request headers worth keeping: everything but credentials."""
    return {k: v for k, v in headers.items() if k.lower() not in _DROPPED_HEADERS}


def receive(conn: Connection, source: str, envelope: Envelope, headers: dict, body: bytes,
            origin: str = "webhook") -> bool:
    """Insert the raw webhook unless (source, event id) is already stored; True if new."""
    params = {"source": source, "event_id": envelope.event_id, "topic": envelope.topic[:100],
              "headers": headers, "body": body, "received_at": datetime.now(timezone.utc),
              "triggered_at": envelope.triggered_at, "shop": envelope.shop,
              "api_version": envelope.api_version, "status": PENDING, "attempts": 0,
              "outcome": [], "origin": origin}
    return insert_ignore(conn, InboxEvent.__table__, params, KEY, returning=("id",)).scalar() is not None


_UNREAD = (InboxEvent.headers, InboxEvent.received_at, InboxEvent.processed_at, InboxEvent.outcome,
           InboxEvent.error, InboxEvent.traceback)


def claim_batch(session: Session, size: int) -> list[InboxEvent]:
    """The oldest pending rows, locked against other workers until commit (on SQLite the
    caller holds Storage.drain_lock() instead)."""
    # Columns the drain never reads (it writes the outcome ones): not decoded for 500 rows.
    query = InboxEvent.pending_oldest_first(
        select(InboxEvent).options(*(defer(c) for c in _UNREAD))).limit(size)
    if locks_claimed_rows(session):
        return list(session.scalars(query.with_for_update(skip_locked=True)))
    # SQLite: the rows are read before the transaction begins (the driver opens it at the
    # first write), so it holds no snapshot of the inbox's file: its one write there, the
    # outcomes at the end, then waits for the webhooks' commits instead of failing with
    # "database is locked" because one came in meanwhile. lock_model() follows.
    return list(session.scalars(query))


def lock_model(session: Session) -> None:
    """SQLite: take the model file's write lock now, before the batch reads the model, so
    its own writes never meet a snapshot that another writer's commit made stale."""
    take_write_lock(session.connection(), Checkpoint.__table__, "")


# Events whose handling reads stored webhooks and rewrites them (an erasure blanks bodies).
INBOX_WRITERS = frozenset({SUBSCRIBER_ERASE})


def lock_inbox(session: Session) -> None:
    """SQLite: take the inbox file's write lock now, for a batch that will read stored rows
    and then rewrite them (webhooks wait until it commits; see INBOX_WRITERS)."""
    take_write_lock(session.connection(), InboxEvent.__table__)


def drain_inbox(storage, settings, batch_size: int | None = None, now: datetime | None = None,
                max_batches: int | None = None, linger_s: float = 0.0, on_batch=None,
                wait: bool = True) -> dict:
    """Process pending rows in batches until none is left; returns counts by status.
    `linger_s`: before each batch, wait up to this long while webhooks keep arriving.
    `on_batch(connectors)`: after each committed batch, the connectors it planned deliveries for.
    `wait` False: raise DrainerBusy at once if another process drains this SQLite inbox."""
    with storage.drain_lock(wait=wait):
        return _drain(storage, settings, batch_size, now, max_batches, linger_s, on_batch)


def _drain(storage, settings, batch_size, now, max_batches, linger_s, on_batch) -> dict:

    size = batch_size or settings.HUB_INBOX_BATCH
    counts = {PROCESSED: 0, IGNORED: 0, FAILED: 0}
    batches = 0
    # Rows still to drain one per transaction, after a batch failed as a whole: past the
    # per-row guards of process_batch (in after_batch, say), so no row is named at fault.
    alone = 0
    # After a full batch a backlog is likely still there: the next batch is claimed at once,
    # without a look (and its count) for a fuller one.
    full = False
    while max_batches is None or batches < max_batches:
        if linger_s and not alone and not full:
            await_fuller_batch(storage, size, linger_s)
        with storage.session() as session, DrainTurn(session) as turn:
            plan_for_values(session)
            rows = claim_batch(session, 1 if alone else size)
            if not rows:
                break
            full = len(rows) == size
            unit = UnitOfWork(session)
            try:
                with storage.write_turn():
                    lock_model(session)
                    outcomes = process_batch(unit, rows, settings, now, turn)
                    statuses = [row.status for row in rows]
                    after_batch(unit, settings, outcomes)
                    planned = planned_connectors(unit)
                    session.commit()
            except OperationalError:  # the database's own trouble (locks, connection): no row's
                raise
            except Exception as exc:
                session.rollback()
                if len(rows) > 1:
                    log.warning("inbox batch of %d rows failed as a whole (%s); draining them one by one",
                                len(rows), type(exc).__name__)
                    alone = len(rows)
                    continue
                _fail_alone(storage, unit, rows[0], exc)
                statuses, planned = [FAILED], set()
        for status in statuses:
            counts[status] += 1
        alone = max(alone - 1, 0)
        batches += 1
        if on_batch is not None and planned:
            on_batch(planned)
    return counts


def _fail_alone(storage, unit: UnitOfWork, row: InboxEvent, exc: Exception) -> None:
    """Mark failed, in the session's next transaction, a row whose one-row batch failed as a
    whole (called while handling `exc`, after the rollback)."""
    unit.clear()  # what the undone work left for later flushes is void
    _record(row, _started(row))
    _failed(row, exc)
    with storage.write_turn():
        unit.session.commit()


LINGER_STEP_S = 0.02


def await_fuller_batch(storage, size: int, linger_s: float) -> int:
    """Wait while fewer than `size` rows are pending and more keep arriving (up to
    `linger_s`); the pending count seen last.

    Under a stream of webhooks a drainer that takes whatever is there drains a few rows per
    transaction, and on SQLite each transaction also shuts the webhooks out of the one write
    lock: a fuller batch costs less per row, and the wait holds no lock. When nothing new
    arrives between two looks it goes at once (a lone webhook waits one step, 20 ms).

    The pending rows are counted once; each later look counts only the rows stored since the
    one before, through the primary key. Counting the pending rows again at every step read
    up to `size` of them, and on PostgreSQL every entry of the open rows' index left by rows
    processed meanwhile, each time (the drain's busiest statement in a burst). The count is
    a guide for the wait alone: rows another worker claims meanwhile are still counted, and
    claim_batch() takes what is really there.
    """
    deadline = time.monotonic() + linger_s
    with storage.engine.connect() as conn:
        seen = _pending(conn, size)
        if not (0 < seen < size and time.monotonic() < deadline):
            return seen
        newest = conn.execute(select(func.max(InboxEvent.id))).scalar() or 0
        conn.rollback()
        while 0 < seen < size and time.monotonic() < deadline:
            time.sleep(LINGER_STEP_S)
            arrived, newest = _stored_since(conn, newest, size)
            if not arrived:
                break
            seen += arrived
    return min(seen, size)


def _pending(conn, size: int) -> int:
    ids = InboxEvent.pending_oldest_first(select(InboxEvent.id)).limit(size).subquery()
    seen = conn.execute(select(func.count()).select_from(ids)).scalar()
    conn.rollback()  # SQLite: a read transaction left open would keep seeing this moment
    return seen


def _stored_since(conn, newest: int, size: int) -> tuple[int, int]:
    """How many inbox rows have an id above `newest` (up to `size`), and the highest of them.
    Read in the primary key's order: with a row limit that is the plan whatever statistics
    PostgreSQL holds (a count of `id > newest` alone was a scan of the table in the generic
    plan of a prepared statement)."""
    ids = conn.execute(select(InboxEvent.id).where(InboxEvent.id > newest)
                       .order_by(InboxEvent.id).limit(size)).scalars().all()
    conn.rollback()
    return len(ids), ids[-1] if ids else newest


def after_batch(unit: UnitOfWork, settings, outcomes: list[dict] = ()) -> None:
    """Work done once per batch rather than per row (outbox coalescing), then the rows'
    `outcomes` (from process_batch), written last: on SQLite that write takes the inbox
    file's lock, and webhooks wait while the transaction holding it commits, not while it
    plans deliveries too."""

    outbox.flush_pending_profiles(unit, settings)
    update_by_key(unit.session.connection(), InboxEvent.__table__, outcomes)


def process_batch(unit: UnitOfWork, rows: list[InboxEvent], settings,
                  now: datetime | None = None, turn: DrainTurn | None = None) -> list[dict]:
    """Process claimed rows in order, all in one savepoint: identities looked up for the whole
    batch at once, no savepoint and no flush of its own per row. The rows' outcome fields,
    for after_batch to write in one executemany UPDATE per shape of fields (rows redone one
    by one are written by the flush instead, and are not among them).

    Should any row raise while it changes the model, the batch's work is rolled back and the
    rows are processed again one by one (process_row, a savepoint each): the bad row alone
    ends failed and the others are processed as if it had not been there.
    """

    session = unit.session
    dirty, planned = set(unit.dirty), set(unit.planned)
    unanswered: dict[str, RetryLater] = {}
    prepared = [(row, _prepare(row, settings, unanswered)) for row in rows]
    mentions = [(e.source, e.customer, e.name in CREATES) for _, (_, events) in prepared
                for e in events or ()]
    if turn is not None:  # PostgreSQL: wait for other drainers' batches about these people
        turn.hold(*people_named(mentions))
    if any(e.name in INBOX_WRITERS for _, (_, events) in prepared for e in events or ()):
        lock_inbox(session)
    savepoint = session.begin_nested()
    try:
        # Outcomes are written to the rows by after_batch: one UPDATE for the batch rather
        # than one in every flush along the way.
        outcomes = []
        with identity.batch(unit, mentions):
            for row, (stop, events) in prepared:
                fields = _started(row)
                fields.update(stop if stop is not None else _apply(unit, row, events, settings, now))
                outcomes.append((row, fields))
        write_new(unit)
        write_changed(session, Subscriber)
        savepoint.commit()
    except Exception as exc:  # redone row by row below, where the bad row is named
        savepoint.rollback()
        first = exc
    else:
        return _record_all(outcomes)
    # What the undone work marked for the outbox is void; its objects are loaded again if needed.
    unit.dirty, unit.planned, unit.held = dirty, planned, {}
    log.info("inbox batch of %d rows hit %s: %s; processing it row by row", len(rows),
             type(first).__name__, first)
    for row in rows:
        process_row(unit, row, settings, now)
    return []


def people_named(mentions) -> tuple[set[str], bool]:
    """The keys (emails, platforms' customer ids) that name the people of a batch's
    `mentions`, and whether it may touch people it does not name (a whole-shop event)."""
    keys, unnamed = set(), False
    for source, customer, _ in mentions:
        column = identity.SOURCE_ID_COLUMNS.get(source)
        source_id = (customer or {}).get("source_id")
        email = normalize_email((customer or {}).get("email"))
        named = [f"{column.key}:{source_id}"] if column is not None and source_id else []
        named += [f"email:{email}"] if email else []
        keys.update(named)
        unnamed = unnamed or not named
    return keys, unnamed


def _started(row: InboxEvent) -> dict:
    fields = {"attempts": (row.attempts or 0) + 1, "processed_at": datetime.now(timezone.utc)}
    if row.retry_at is not None:  # a waiting row replayed by staff before its time
        fields["retry_at"] = None
    return fields


def _record(row: InboxEvent, fields: dict) -> None:
    for attr, value in fields.items():
        setattr(row, attr, value)


def _record_all(outcomes: list[tuple[InboxEvent, dict]]) -> list[dict]:
    """The batch's outcomes as rows for after_batch to write; the loaded rows show them as
    committed values, without the unit of work diffing every row."""
    for row, fields in outcomes:
        # Loaded and unmodified (a row failed in _prepare is written by the flush instead):
        # the instance dict is its committed state.
        state = instance_state(row)
        if state.modified:
            for attr, value in fields.items():
                set_committed_value(row, attr, value)
        else:
            state.dict.update(fields)
    return [{"id": row.id, **fields} for row, fields in outcomes]


def _prepare(row: InboxEvent, settings, unanswered: dict | None = None) -> tuple[dict | None, list | None]:
    """(None, events) for a row to apply, or (fields, None) for one that stops here: its
    status and error, and `retry_at` when the platform's API did not answer (_waiting).

    `unanswered` (source → the RetryLater of its first call that got no answer) spans a
    batch: once a platform did not answer, the batch's other rows that would call it wait
    without calling. A platform that times out would otherwise hold the drain for every
    such row, and every other platform's webhooks behind them.

    Pure but for the source's enrichment call: nothing here touches the session, so a row
    whose payload is unreadable or unidentified, or that the normalizer rejects or crashes
    on in any way (RecursionError and OverflowError too), fails alone. Never raises.
    """
    try:
        payload = _payload(row)
    except ValueError as exc:
        return {"status": FAILED, "error": str(exc)}, None
    try:
        source = get_source(row.source)
        if row.topic == UNREADABLE or not row.topic:
            return {"status": FAILED, "error": f"the {row.source} event names no id or type the hub can read "
                                               f"(it sends them in {source.identified_by})"}, None
        normalizer = source.topics.get(row.topic)
        if normalizer is None:
            return {"status": IGNORED, "error": f"no handler for {row.source} topic {row.topic!r}"}, None
        enrich = source.enrich.get(row.topic)
        if enrich is not None:
            first = (unanswered or {}).get(row.source)
            if first is not None:
                return _waiting(row, RetryLater(first.retry_after, f"not asked while {row.source} does not "
                                                                   f"answer: {first}")), None
            payload = enrich(payload, settings)
        envelope = Envelope(event_id=row.event_id, topic=row.topic, shop=row.shop,
                            api_version=row.api_version, triggered_at=row.triggered_at)
        return None, normalizer(payload, envelope)
    except RetryLater as exc:  # the platform's API did not answer what the event needs from it
        if unanswered is not None:
            unanswered.setdefault(row.source, exc)
        return _waiting(row, exc), None
    except Exception as exc:  # the row records its failure; the batch goes on
        _failed(row, exc)
        return {"status": FAILED, "error": row.error}, None


# A row whose platform did not answer waits a minute, then twice as long after each try up to
# an hour, then an hour: about a day in MAX_WAITING_TRIES tries, longer than the platforms'
# own outages usually last. After that it stays failed for staff to replay, so a platform that
# never answers (a revoked key reads as an answer, a 401, and fails at once) is not asked forever.
MAX_WAITING_TRIES = 30
MAX_WAIT = timedelta(hours=1)


def retry_wait(tries: int, asked_s: float = 0.0) -> timedelta:
    """How long a row waits after its `tries`-th try found the platform not answering; at
    least what the platform asked for (a 429's Retry-After)."""
    return max(min(MAX_WAIT, timedelta(minutes=2 ** (max(tries, 1) - 1))), timedelta(seconds=asked_s))


def _waiting(row: InboxEvent, exc: RetryLater, tried: bool = False) -> dict:
    """The fields of a row whose call to its platform got no answer: failed, and opened again
    by the backstop at `retry_at` (reopen_waiting), or for good after MAX_WAITING_TRIES.
    `tried`: the row's attempts count this try already."""
    tries = (row.attempts or 0) + (0 if tried else 1)
    if tries >= MAX_WAITING_TRIES:
        return {"status": FAILED, "retry_at": None,
                "error": f"{exc} (tried {tries} times over about a day: replay it once {row.source} answers)"}
    log.info("inbox row %s (%s %s) waits for %s: %s", row.id, row.source, row.topic, row.source, exc)
    return {"status": FAILED, "error": str(exc),
            "retry_at": datetime.now(timezone.utc) + retry_wait(tries, exc.retry_after)}


def reopen_waiting(storage, now: datetime | None = None, limit: int = 1000) -> int:
    """Open again the failed rows whose platform did not answer and whose wait is over: each
    is pending once more, its try kept as an earlier attempt (as a replay keeps it) with
    `next` "retry", so its page says the hub tried again by itself. How many."""
    now = now or datetime.now(timezone.utc)
    with storage.session() as session:
        query = (select(InboxEvent).where(InboxEvent.is_waiting(), InboxEvent.retry_at <= now)
                 .order_by(InboxEvent.id).limit(limit))
        if locks_claimed_rows(session):  # PostgreSQL: two hosts' backstops never open one row twice
            query = query.with_for_update(skip_locked=True)
        rows = list(session.scalars(query))
        for row in rows:
            row.outcome = _earlier_attempts(row, then="retry")
            row.status, row.error, row.traceback, row.retry_at = PENDING, None, None, None
    if rows:
        log.info("%d inbox rows whose platform did not answer are pending again", len(rows))
    return len(rows)


def _earlier_attempts(row: InboxEvent, then: str | None = None) -> list[dict]:
    """The row's outcome with its latest attempt kept as an earlier one (its entries and its
    own line), before it is processed again; `then` "retry" when the hub tries again by itself."""
    outcome = row.outcome or []
    number = 1 + sum(1 for entry in outcome if EARLIER in entry and "attempt" in entry)
    attempt = {"at": row.processed_at.isoformat() if row.processed_at else None, "status": row.status,
               "error": row.error, **({"next": then} if then else {})}
    return [*(entry if EARLIER in entry else {**entry, EARLIER: number} for entry in outcome),
            {EARLIER: number, "attempt": attempt}]


def _failed(row: InboxEvent, exc: Exception) -> None:
    row.status = FAILED
    row.error = f"{type(exc).__name__}: {exc}"[:2000]
    row.traceback = tb.format_exc()[-8000:]
    log.warning("inbox row %s (%s %s) failed: %s", row.id, row.source, row.topic, row.error)


def _apply(unit: UnitOfWork, row: InboxEvent, events: list, settings, now: datetime | None,
           flush: bool = False) -> dict:
    """Apply and decide each event of one row; the row's outcome fields."""
    outcome = []
    subscriber_id = None
    for event in events:
        changes = apply_event(unit.session, event, unit.people)
        if flush:
            unit.session.flush()
        triggers = decide(unit, changes, event, row, settings, now)  # it may add notes
        outcome.append({**changes.to_dict(), "occurred_at": event.occurred_at.isoformat(), "triggers": triggers})
        if changes.subscriber is not None:
            subscriber_id = changes.subscriber.id
    # A row opened again by reopen_waiting keeps its earlier attempts (a fresh row has none:
    # its outcome, which the drain does not load, is not read).
    earlier = [entry for entry in row.outcome or [] if EARLIER in entry] if row.attempts else []
    return {"status": PROCESSED if events else IGNORED,
            "error": None if events else "nothing the hub tracks in this payload",
            "traceback": None, "outcome": outcome + earlier, "subscriber_id": subscriber_id}


def process_row(unit: UnitOfWork, row: InboxEvent, settings, now: datetime | None = None) -> None:
    """Normalize, apply and decide for one stored webhook in a savepoint of its own; the
    outcome (or the failure) is recorded on the row."""
    started = _started(row)
    stop, events = _prepare(row, settings)
    _record(row, started)
    if stop is not None:
        _record(row, stop)
        return
    savepoint = unit.session.begin_nested()
    try:
        fields = _apply(unit, row, events, settings, now, flush=True)
        savepoint.commit()
    except RetryLater as exc:  # a rule's call to the platform got no answer (a stock lookup)
        savepoint.rollback()
        _record(row, _waiting(row, exc, tried=True))
        return
    except Exception as exc:  # the row records any failure; the batch goes on
        savepoint.rollback()
        _failed(row, exc)
        return
    _record(row, fields)


def _payload(row: InboxEvent) -> dict:
    try:
        payload = json_value(row.body)
    except RecursionError:
        raise ValueError("body is JSON nested deeper than the hub reads") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ValueError("body is JSON but not an object")
    return payload


def decide(unit: UnitOfWork, changes, event, row: InboxEvent, settings, now: datetime | None) -> list[str]:
    """Run the event rules for the changed subscriber and plan the outbox; trigger names fired."""
    session = unit.session
    subscriber = changes.subscriber
    # Compliance: after customers/redact the person's data is gone from the
    # hub; ask every enabled tool that can to delete them too (hub.sync.outbox.plan_erasures).
    # No rules run and no profile is planned for an erased person.
    if getattr(changes, "erased", None):
        outbox.plan_erasures(unit, settings, changes.erased)
        return []
    if subscriber is None and event.name in rules.WITHOUT_SUBSCRIBER:
        # An inventory change names a product, not a person: the rules find the subscribers
        # whose next shipment holds it; each trigger goes out to its own subscriber.
        history = row.origin == "backfill"
        triggers = rules.WITHOUT_SUBSCRIBER[event.name](session, event, now or event.occurred_at,
                                                        inbox_event_id=row.id, history=history,
                                                        settings=settings)
        outbox.plan_triggers(unit, settings, triggers, history=history)
        return [t.name for t in triggers]
    if subscriber is None or changes.stale:
        return []
    at = now or event.occurred_at
    history = row.origin == "backfill"
    triggers = rules.on_event(session, subscriber, event, changes, at, inbox_event_id=row.id,
                              history=history, settings=settings)
    outbox.plan(unit, settings, subscriber, changes, triggers, event, history=history)
    return [t.name for t in triggers]




def replay(unit: UnitOfWork, row: InboxEvent, settings) -> list[dict]:
    """Process a stored event again through the same code path, as a new attempt.

    What the earlier attempts did stays in the row's outcome (marked EARLIER); the new
    attempt's entries are returned (none when it failed; no `changed` when nothing moved).
    """
    earlier = _earlier_attempts(row)
    row.status, row.error, row.outcome = PENDING, None, []
    process_row(unit, row, settings)
    latest = [entry for entry in row.outcome or [] if EARLIER not in entry]
    row.outcome = latest + earlier
    return latest
