"""The outbox: what the hub decided becomes Delivery rows; workers push them per connector.

plan() runs inside the inbox drain, in the savepoint of one webhook: trigger and consent
deliveries are inserted at once (insert-or-ignore on (connector, idempotency key), so a
replay adds nothing), while profile changes only mark the subscriber dirty in the session.
flush_pending_profiles() then writes one profile delivery per dirty subscriber and
connector per drained batch, with the field values as they are after the whole batch. A
slower tool (HubSpot, ActiveCampaign: Connector.slow) is only marked as owed the profile
(ProfileDue); its push plans the delivery when it has room for it (plan_due_profiles),
from the person as they are then.

push_batch() runs in workers. Due rows are claimed in a short transaction that pushes
their next_attempt_at a lease ahead and stamps them with the claim's time (claimed_at),
the tool is called outside any transaction, and the outcome is written in a second one:
one DeliveryAttempt per delivery, then sent / retrying with backoff / dead, claimed_at
cleared. While the tool is called a heartbeat renews the lease (Lease), so a long push
keeps its rows and a worker that dies mid-push lets them go about one lease later.

A claim that finds claimed_at still set knows the push before it stopped between the call
and its answer: the tool may hold the delivery. It logs an "interrupted" attempt and the
delivery is sent again as it was. Events carry their trigger key as `unique_id`, so a
tool that honours it (Klaviyo) keeps one event; a profile update is idempotent but is one
more write to the tool, counted on /metrics (hub_deliveries_interrupted_total).
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

import orjson
from sqlalchemy import String, delete, func, insert, select, type_coerce, update
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.base import instance_state
from tenacity import RetryCallState, wait_exponential, wait_random

import connectors
from connectors.base import Held, Outgoing, RetryAfter, Sent, truncate
from connectors.ratelimit import Limiter
from hub import events as ev
from hub.db.bulk import execute_many, update_by_key, write_new
from hub.db.dialect import insert_ignore, locks_claimed_rows, mark_once, one_of
from hub.db.unit import UnitOfWork
from hub.models import (
    CANCELLED,
    DEAD,
    INTERRUPTED,
    QUEUED,
    RETRYING,
    SENT,
    Delivery,
    DeliveryAttempt,
    ProfileDue,
    Subscriber,
    Trigger,
    TriggerStatus,
    now_utc,
)
from hub.sync import compliance
from hub.values import iso, per_month

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
# Waits after each failure: 15 s, 45 s, 2 min, 7 min, 20 min, 1 h, 3 h (4.5 h in all; the
# 8th failure is dead), with seconds of jitter so a recovered tool is not hit all at once.
BACKOFF = wait_exponential(multiplier=15, exp_base=3, max=4 * 3600) + wait_random(0, 5)
PUSH_BUDGET_SECONDS = 60.0
# The longest a push sleeps for room in a rate-limit window. A longer wait holds the delivery
# (no attempt) and ends the push, which is queued again for when the window has room:
# the worker goes on with other tools meanwhile, so each tool is held only by its own
# limit. Klaviyo's 75/s waits 13 ms and sleeps; ActiveCampaign's 5/s waits 200 ms and yields.
PUSH_RATE_WAIT_S = 0.05
# How long a push that may wait in place for its rate limit's window waits on a hold the
# connector guessed (Held.guessed) before it asks the limiter again: long enough for
# hub.jobs.wait_for_window to look for other work twice.
GUESSED_HOLD_LOOK_S = 0.1
# Renewals per lease length: a renewal that waits on the write lock or fails leaves two
# more chances before the lease runs out under a push that is still running.
RENEWALS_PER_LEASE = 3
INTERRUPTED_MESSAGE = ("the push stopped before the tool's answer was recorded (its worker was "
                       "killed or lost the database); resent after a crash")

KEY = ("connector", "idempotency_key")  # a delivery is planned once

# Subscription statuses that count towards MRR: trials and paused ones bring no revenue.
MRR_STATUSES = ("active", "past_due")
# Which subscription speaks for the subscriber (status, plan): the most alive one.
_STATUS_RANK = {"active": 0, "past_due": 1, "trialing": 2, "paused": 3, "canceled": 4,
                "expired": 5, "incomplete": 6}
_OUTCOME = {SENT: "sent", RETRYING: "retry", DEAD: "dead"}


# What is sent -------------------------------------------------------------------------

def profile_fields(subscriber: Subscriber) -> dict:
    """The canonical profile fields of a subscriber, from its model rows (pure)."""
    subscriptions = list(subscriber.subscriptions or [])
    main = min(subscriptions, default=None, key=_speaks_first)
    currency = (main.currency if main else None) or subscriber.currency
    mrr = sum(monthly_amount(s) for s in subscriptions
              if s.status in MRR_STATUSES and (s.currency or currency) == currency)
    renewals = [s.next_renewal_at for s in subscriptions if s.is_live and s.next_renewal_at]
    return {
        "stage": subscriber.stage,
        "health_score": subscriber.health_score,
        "tier": subscriber.tier,
        "points": subscriber.loyalty_points or 0,
        "subscription_status": main.status if main else None,
        "subscription_source": ev.subscription_source(main.source) if main else None,
        # A plan only while it runs: a cancelled one clears it at the tools.
        "plan": main.plan if main and main.is_live else None,
        "mrr": mrr,
        "next_renewal_at": iso(min(renewals)) if renewals else None,
        "lifetime_value": subscriber.lifetime_spend or 0,
    }


def _speaks_first(subscription) -> tuple:
    at = subscription.source_updated_at or subscription.started_at or subscription.created_at
    return _STATUS_RANK.get(subscription.status, 9), -(at.timestamp() if at else 0.0)


def monthly_amount(subscription) -> int:
    """The subscription's price per month in minor units (0 when unknown)."""
    return per_month(subscription.amount, subscription.interval, subscription.interval_count)


def _who(subscriber: Subscriber) -> dict:
    return {"subscriber_id": subscriber.id, "email": subscriber.email, "phone": subscriber.phone}


def profile_payload(subscriber: Subscriber, fields: dict, mapping: dict) -> dict:
    """A profile delivery's payload: identity and the fields this connector maps."""
    return {**_who(subscriber), "first_name": subscriber.first_name,
            "last_name": subscriber.last_name,
            "fields": {k: v for k, v in fields.items() if mapping["fields"].get(k)}}


def cleared_fields(payload: dict, previous: dict | None, previous_sent: bool) -> list[str]:
    """Fields this payload empties that the tool may still hold: set in the previous profile
    delivery, or emptied by it when it was never sent (superseded, still queued, dead)."""
    if previous is None:
        return []
    before = previous.get("fields") or {}
    held = set() if previous_sent else set(previous.get("cleared") or ())
    return sorted(k for k, v in payload["fields"].items()
                  if v is None and (before.get(k) is not None or k in held))


def profile_digest(payload: dict) -> str:
    """The fingerprint of a profile payload in its delivery's key: "o" and 15 hex digits of
    the SHA-256 of its JSON with sorted keys (orjson: several times faster than json.dumps)."""
    try:
        text = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS, default=str)
    except TypeError:  # what orjson cannot write (an integer beyond 64 bits) json.dumps can
        text = json.dumps(payload, sort_keys=True, default=str).encode()
    return "o" + hashlib.sha256(text).hexdigest()[:15]


def _held(previous_key: str, payload: dict, digest: str) -> bool:
    """The previous profile delivery's key names this payload."""
    held = previous_key.split(":")[2:3]
    if not held or held[0].startswith("o"):
        return held == [digest]
    # A key written before profile_digest: 16 hex digits of the json.dumps text's SHA-256.
    text = json.dumps(payload, sort_keys=True, default=str)
    return held[0] == hashlib.sha256(text.encode()).hexdigest()[:16]


# Which connectors ----------------------------------------------------------------------

def enabled_connectors(settings) -> list[str]:
    """Names of the connectors that are on (connectors.configured says why others are off)."""
    return [name for name, on, _ in connectors.configured(settings) if on]


def _targets(settings, kind: str) -> list[tuple[str, dict]]:
    """(name, mapping) of each enabled connector that is sent deliveries of `kind`."""
    found = []
    for name in enabled_connectors(settings):
        mapping = connectors.load_mapping(settings, name)
        if kind in mapping["send"]:
            found.append((name, mapping))
    return found


def _reachable(name: str, subscriber: Subscriber) -> bool:
    """The tool can identify this person (an email, or a phone where the tool takes one)."""
    needs = connectors.CONNECTORS[name].needs
    return subscriber.erased_at is None and any(getattr(subscriber, n, None) for n in needs)


# Planning -----------------------------------------------------------------------------

def plan(unit: UnitOfWork, settings, subscriber, changes, triggers, event,
         history: bool = False) -> None:
    """Deliveries for one applied event: profile marked dirty, trigger and consent rows added."""
    if subscriber is None or getattr(changes, "stale", False):
        return
    if subscriber.id is None:
        unit.session.flush()
    mark_dirty(unit, subscriber.id, subscriber)
    plan_triggers(unit, settings, triggers, subscriber=subscriber, history=history)
    if _became_reachable(subscriber, changes):
        owed = plan_owed_triggers(unit, settings, subscriber)
        if owed:
            changes.notes.append(f"reachable now: {owed} deliveries of triggers fired while no tool "
                                 "could identify them")
    if event is not None and event.name == ev.CONSENT_CHANGED:
        plan_consent(unit, settings, subscriber, changes, event, history=history)


# A person no tool could identify (no email, no phone: a webhook applied by its ids alone) still
# fires triggers. Once an event names how to reach them, the ones fired within this window go
# out late: a welcome or a reminder a few days late still reads as news; older ones would not.
OWED_WINDOW = timedelta(days=7)


def _became_reachable(subscriber: Subscriber, changes) -> bool:
    """This event gave a person their first email, or a phone when they have no email: before
    it, some tool could not identify them (every tool takes an email; some a phone instead)."""
    learned = {c.get("field") for c in getattr(changes, "changed", ()) if c.get("from") is None}
    return "email" in learned or ("phone" in learned and subscriber.email is None)


def plan_owed_triggers(unit: UnitOfWork, settings, subscriber: Subscriber) -> int:
    """The deliveries of `subscriber`'s triggers fired within OWED_WINDOW that a tool could not
    take then and can now; rows added (a delivery a tool has is not planned again)."""
    since = now_utc() - OWED_WINDOW
    owed = unit.session.scalars(select(Trigger).where(
        Trigger.subscriber_id == subscriber.id, Trigger.status == TriggerStatus.FIRED,
        Trigger.created_at >= since)).all()
    return plan_triggers(unit, settings, owed, subscriber=subscriber)


def mark_dirty(unit: UnitOfWork, subscriber_id: int, subscriber: Subscriber | None = None) -> None:
    """The subscriber's profile is pushed at the unit's next flush_pending_profiles()."""
    unit.dirty.add(subscriber_id)
    if subscriber is not None:
        # The session holds clean objects only weakly: keep the person loaded until the
        # profile is planned, rather than loading them again.
        unit.held[subscriber_id] = subscriber


def plan_triggers(unit: UnitOfWork, settings, triggers, subscriber: Subscriber | None = None,
                  history: bool = False) -> int:
    """One event delivery per fired trigger per connector that takes it; returns rows added."""
    fired = [t for t in triggers or () if t.status == "fired"]
    if not fired:
        return 0
    session = unit.session
    if any(t.id is None for t in fired):
        session.flush()
    rows = []
    for name, mapping in _targets(settings, "event"):
        for trigger in fired:
            person = subscriber
            if person is None or person.id != trigger.subscriber_id:
                person = session.get(Subscriber, trigger.subscriber_id)
            metric = connectors.trigger_name(mapping, trigger.name)
            if person is None or metric is None or not _reachable(name, person):
                continue
            payload = {**_who(person), "name": metric, "properties": trigger.properties or {},
                       "time": iso(trigger.due_at or trigger.created_at or now_utc()),
                       "unique_id": trigger.key, "history": history}
            rows.append(delivery_row(name, "event", person.id, trigger.key, payload, history, trigger.id))
    return insert_deliveries(unit, rows)


def plan_consent(unit: UnitOfWork, settings, subscriber: Subscriber, changes, event,
                 history: bool = False) -> int:
    """A consent delivery when the source reported a new state; it carries the source's time."""
    channel = event.data.get("channel")
    held = (subscriber.consent or {}).get(channel) or {}
    changed = any(c.get("what") == f"{channel} consent" for c in getattr(changes, "changed", []))
    if not changed or held.get("state") not in ("subscribed", "unsubscribed"):
        return 0
    identifier = subscriber.email if channel == "email" else subscriber.phone
    if not identifier or subscriber.erased_at is not None:
        return 0
    key = f"consent:{subscriber.id}:{channel}:{held['state']}:{held.get('at')}"
    payload = {**_who(subscriber), "channel": channel, "state": held["state"],
               "consented_at": held.get("at"), "source": held.get("source"), "history": history}
    # Only tools that record consent on this channel, as mapped (a list, a subscription type).
    rows = [delivery_row(name, "consent", subscriber.id, key, payload, history)
            for name, mapping in _targets(settings, "consent")
            if connectors.CONNECTORS[name].takes_consent(mapping, channel)]
    return insert_deliveries(unit, rows)


def plan_sweep(unit: UnitOfWork, settings, trigger_ids=(), subscriber_ids=()) -> int:
    """Deliveries for what a time-rule sweep decided: its fired triggers, changed profiles."""
    session = unit.session
    triggers = []
    for chunk in _chunks(list(trigger_ids)):
        triggers += session.scalars(select(Trigger).where(one_of(session, Trigger.id, chunk))).all()
    # Load the people in one query per chunk, not one per trigger.
    for chunk in _chunks(list({t.subscriber_id for t in triggers})):
        session.scalars(select(Subscriber).where(one_of(session, Subscriber.id, chunk))).all()
    added = plan_triggers(unit, settings, triggers)
    for subscriber_id in subscriber_ids:
        mark_dirty(unit, subscriber_id)
    return added + flush_pending_profiles(unit, settings)


def _chunks(values: list, size: int = 500):
    for start in range(0, len(values), size):
        yield values[start:start + size]


def flush_pending_profiles(unit: UnitOfWork, settings) -> int:
    """One profile delivery per subscriber the unit marked dirty and connector, skipped when
    nothing changed; for a slower tool, a mark that it is owed one (plan_due_profiles)."""
    ids, held = sorted(unit.dirty), unit.held
    unit.dirty, unit.held = set(), {}
    targets = _targets(settings, "profile") if ids else []
    # A slower tool takes a burst's profiles over minutes or hours: planning them now would
    # spend the drain's time on payloads that wait anyway and go stale while they do.
    slow = connectors.slow_tools()
    owed = [name for name, _ in targets if name in slow]
    if owed:
        at = now_utc()
        mark_once(unit.session.connection(), ProfileDue.__table__,
                  [{"connector": name, "subscriber_id": i, "marked_at": at} for name in owed for i in ids],
                  ("connector", "subscriber_id"))
        unit.planned.update(owed)
    targets = [t for t in targets if t[0] not in owed]
    if not targets:
        return 0
    return sum(_flush_profiles(unit, targets, chunk, held) for chunk in _chunks(ids))


def plan_due_profiles(storage, settings, connector_name: str, limit: int) -> int:
    """Deliveries of the profiles a slower tool is owed (ProfileDue), the longest waiting
    first and at most `limit`, from the people as they are now; how many were planned. The
    marks of a tool that takes no profiles any more are dropped."""
    table = ProfileDue.__table__
    oldest = (select(table.c.subscriber_id).where(table.c.connector == connector_name)
              .order_by(table.c.marked_at, table.c.subscriber_id).limit(limit))
    with storage.write_turn(), storage.session() as session:
        # Marks taken before the people are read: a drain marking one of them again holds
        # its row (mark_once) until it commits, so this waits and then reads what it wrote,
        # or the drain marks them anew after this and they are planned again.
        ids = session.scalars(delete(table).where(table.c.connector == connector_name,
                                                  table.c.subscriber_id.in_(oldest))
                              .returning(table.c.subscriber_id)).all()
        targets = [t for t in _targets(settings, "profile") if t[0] == connector_name] if ids else []
        if not targets:
            return 0
        return sum(_flush_profiles(UnitOfWork(session), targets, chunk) for chunk in _chunks(sorted(ids)))


def _flush_profiles(unit: UnitOfWork, targets: list[tuple[str, dict]], ids: list[int],
                    held: dict | None = None) -> int:
    session = unit.session
    # The drain just applied these people: they are in the session with their subscriptions
    # loaded, and their in-memory state is what a query would return after its autoflush.
    subscribers, missing = [], []
    for subscriber_id in ids:
        one = (held or {}).get(subscriber_id)
        if (one is not None and one in session and "subscriptions" in one.__dict__
                and not instance_state(one).expired):
            subscribers.append(one)
        else:
            missing.append(subscriber_id)
    if missing:
        subscribers += session.scalars(select(Subscriber).where(one_of(session, Subscriber.id, missing))
                                       .options(selectinload(Subscriber.subscriptions))).all()
    # The last profile delivery of each (connector, subscriber): its key holds its digest.
    # Of every connector: naming them lets SQLite choose the queue index, which holds all of
    # a connector's deliveries, over the index by subscriber (the lookup then slowed down as
    # the table grew: 5 ms per 500 people at 10,000 deliveries; 1 ms this way at any size).
    # People this transaction created have none: a burst of new customers skips the lookup.
    looked = [i for i in ids if i not in unit.unprofiled]
    latest = {}
    if looked:
        latest_ids = select(func.max(Delivery.id)).where(
            Delivery.kind == "profile", one_of(session, Delivery.subscriber_id, looked)
        ).group_by(Delivery.connector, Delivery.subscriber_id)
        latest = {(c, s): (i, k) for i, c, s, k in session.execute(
            select(Delivery.id, Delivery.connector, Delivery.subscriber_id, Delivery.idempotency_key)
            .where(Delivery.id.in_(latest_ids)))}
    unit.unprofiled.difference_update(ids)  # a later flush of this transaction may find theirs
    planned = []  # (connector, subscriber id, payload, digest, previous delivery id)
    for subscriber in subscribers:
        fields = profile_fields(subscriber)
        for name, mapping in targets:
            if not _reachable(name, subscriber):
                continue
            payload = profile_payload(subscriber, fields, mapping)
            digest = profile_digest(payload)
            previous_id, previous_key = latest.get((name, subscriber.id), (0, ""))
            if _held(previous_key, payload, digest):
                continue  # the tool already has (or is about to get) exactly this
            planned.append((name, subscriber.id, payload, digest, previous_id))
    # The previous payload, where a field is empty now, says which fields this one clears.
    previous = {}
    wanted = [p[4] for p in planned if p[4] and None in p[2]["fields"].values()]
    for chunk in _chunks(wanted):
        previous.update({i: (p, status == SENT) for i, p, status in session.execute(
            select(Delivery.id, Delivery.payload, Delivery.status).where(one_of(session, Delivery.id, chunk)))})
    rows = []
    for name, subscriber_id, payload, digest, previous_id in planned:
        # Outside the digest: the values alone say whether the tool has this profile.
        cleared = cleared_fields(payload, *previous.get(previous_id, (None, True)))
        if cleared:
            payload["cleared"] = cleared
        # The previous delivery's id in the key lets A → B → A send A again.
        key = f"profile:{subscriber_id}:{digest}:{previous_id}"
        rows.append(delivery_row(name, "profile", subscriber_id, key, payload, False))
    return insert_deliveries(unit, rows)


def delivery_row(connector: str, kind: str, subscriber_id: int, key: str, payload: dict, history: bool,
                 trigger_id: int | None = None) -> dict:
    """A new delivery's column values, queued now; insert_deliveries writes them."""
    now = now_utc()
    return {"connector": connector, "kind": kind, "subscriber_id": subscriber_id,
            "trigger_id": trigger_id, "idempotency_key": key[:200], "payload": payload,
            "status": QUEUED, "attempts": 0, "next_attempt_at": now, "history": history,
            "created_at": now}


def insert_deliveries(unit: UnitOfWork, rows: list[dict]) -> int:
    """Insert deliveries, skipping any whose (connector, idempotency key) exists; rows added."""
    if not rows:
        return 0
    write_new(unit)  # the people they are for, when numbered but not written yet (no autoflush here)
    # One plain executemany by the driver (no RETURNING, which would make SQLAlchemy build
    # multi-row VALUES statements): the row count says how many were new.
    added = insert_ignore(unit.session, Delivery.__table__, rows, KEY)
    unit.planned.update(r["connector"] for r in rows)
    return added


def planned_connectors(unit: UnitOfWork) -> set[str]:
    """Connectors that got deliveries in this unit (enqueue their push jobs after commit)."""
    return set(unit.planned)


# Pushing ------------------------------------------------------------------------------

# Per process: one connector per name (it caches field and tag ids), one limiter per Redis.
_connectors: dict[str, tuple[object, connectors.Connector]] = {}
_limiters: dict[int, tuple[object, Limiter]] = {}
_local_limiter = Limiter()


def limiter_for(redis=None) -> Limiter:
    """The limiter shared through `redis`, or this process's own."""
    if redis is None:
        return _local_limiter
    held = _limiters.get(id(redis))
    if held is None or held[0] is not redis:
        held = _limiters[id(redis)] = (redis, Limiter(redis))
    return held[1]


def connector_for(name: str, settings, limiter, rate_wait: float | None = None) -> connectors.Connector:
    """The connector instance of this process for `settings`, using `limiter`, sleeping at
    most `rate_wait` for a token before it holds a delivery back (see Connector.call)."""
    held = _connectors.get(name)
    if held is None or held[0] is not settings:
        held = _connectors[name] = (settings, connectors.build(name, settings))
    held[1].use_limiter(limiter, rate_wait)
    return held[1]


def push_batch(storage, settings, connector_name: str, now: datetime | None = None,
               limiter=None, redis=None, max_batches: int | None = None,
               budget_seconds: float = PUSH_BUDGET_SECONDS, give_way: Callable[[], bool] | None = None,
               wait_held: Callable[[float], bool] | None = None) -> dict:
    """Push due deliveries of one connector, batch after batch; counts by outcome.

    Stops when nothing is due, after `max_batches`, once `budget_seconds` are spent or
    before a batch after the first when `give_way()` says other work waits for the worker
    (then "more" is true and the caller enqueues another push), or, on the real clock, when
    the tool's rate limit held deliveries back ("held" counts them). `wait_held(seconds)`
    may sleep through the hold in place and answer True: the push goes on within its budget
    ("waited" counts those waits). Otherwise "resume_in" says in how many seconds the window
    has room again, and the caller pushes again then. `now` fixes the clock (tests,
    the demo's simulated calendar); without it the push may linger briefly.
    """
    # On a clock the caller drives (`now` given) there is no worker to yield: calls sleep
    # for tokens as long as the limiter allows.
    connector = connector_for(connector_name, settings, limiter or limiter_for(redis),
                              PUSH_RATE_WAIT_S if now is None else None)
    length = timedelta(seconds=settings.HUB_PUSH_LEASE_S)
    totals: Counter = Counter()
    started = time.monotonic()
    resume_in = 0.0
    while max_batches is None or totals["batches"] < max_batches:
        if connector.slow:
            _plan_owed(storage, settings, connector, now or now_utc())
        if now is None:
            _linger(storage, connector, give_way)
        # Between batches only: a push that gave way before its first would make no
        # progress at all while other work keeps coming (see hub.queues.queue_order).
        if give_way is not None and totals["batches"] and give_way():
            totals["more"] = 1
            break
        at = now or now_utc()
        items, tried, interrupted = _claim(storage, connector, at, length)
        if not items:
            break
        totals["batches"] += 1
        totals["interrupted"] += len(interrupted)
        if interrupted:
            kinds = Counter(i.kind for i in items if i.delivery_id in interrupted)
            log.warning("%s: %d deliveries were in a push that stopped before the answer (%s); "
                        "sending them again", connector.name, len(interrupted),
                        ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())))
        # The heartbeat stops before the outcome is written: on PostgreSQL its UPDATE and the
        # outcome's could lock the same rows in opposite orders. The lease it last renewed
        # has two thirds of its length left, ample for one write.
        with Lease(storage, [i.delivery_id for i in items], at, length):
            send, superseded = _coalesce(items)
            results = _send(connector, send)
        totals.update(_record(storage, settings, connector.name, send, results, superseded,
                              now or now_utc(), tried))
        held = [r for r in results.values() if isinstance(r, Held)]
        spent = time.monotonic() - started > budget_seconds
        if held:
            # A hold the connector guessed from a wait is looked at briefly, then the limiter
            # is asked again: a window that filled at once empties at once, long before then.
            wait = min(GUESSED_HOLD_LOOK_S if r.guessed else r.seconds for r in held)
            if wait_held is None or not wait_held(wait):
                resume_in = min(r.seconds for r in held)
                break
            # Waited out even when the slice is spent: the next push finds the rows due.
            connector.ask_again()
            totals["waited"] += 1
        if spent:
            totals["more"] = 1
            break
    return {"sent": 0, "retry": 0, "dead": 0, "cancelled": 0, "held": 0, "batches": 0,
            "interrupted": 0, "waited": 0, **totals, "more": bool(totals["more"]), "resume_in": resume_in}


def _plan_owed(storage, settings, connector, at: datetime) -> None:
    """A slower tool's next batch planned from the profiles it is owed, as far as its due
    deliveries fall short of one: planned at the pace the tool takes them."""
    due, _ = _due_count(storage, connector, connector.max_batch, at)
    if due < connector.max_batch:
        plan_due_profiles(storage, settings, connector.name, connector.max_batch - due)


def _due(connector_name: str, at: datetime):
    return (Delivery.connector == connector_name, *_open_by(at))


def _open_by(at: datetime):
    """Deliveries still to be sent that fall due by `at`, of any tool."""
    return Delivery.is_open(), Delivery.next_attempt_at <= at


LINGER_STEP_S = 0.25


def _linger(storage, connector, give_way: Callable[[], bool] | None = None) -> None:
    """Wait up to `connector.linger` = (seconds, rows) for a fuller batch while deliveries
    keep coming: the tools' limits reward bulk calls, and a few seconds do not matter to a
    marketing email. Once a look finds nothing new since the last one, or `give_way()`
    says other work waits for the worker, go at once."""
    seconds, rows = getattr(connector, "linger", (0.0, 0))
    if not seconds:
        return
    seen, oldest = _due_count(storage, connector, rows)
    while (0 < seen < rows and (now_utc() - oldest).total_seconds() < seconds
           and not (give_way is not None and give_way())):
        time.sleep(LINGER_STEP_S)
        count, oldest = _due_count(storage, connector, rows)
        if count == seen:
            break
        seen = count


def _due_count(storage, connector, rows: int, at: datetime | None = None) -> tuple[int, datetime | None]:
    """How many deliveries are due at `at` (now by default), counting up to `rows`, and
    since when the oldest is."""
    at = at or now_utc()
    with storage.session() as session:
        due = (select(Delivery.next_attempt_at).where(*_due(connector.name, at))
               .order_by(Delivery.next_attempt_at).limit(rows).subquery())
        return tuple(session.execute(select(func.count(), func.min(due.c.next_attempt_at))).one())


def next_due_at(storage, connector_names: list[str], after: datetime, until: datetime) -> dict[str, datetime]:
    """When each tool's first open delivery falls due after `after`, up to `until` (a
    retry's backoff ends, or the lease of a push whose worker died runs out); tools with
    none are left out. One grouped query serves every tool."""
    if not connector_names:
        return {}
    with storage.session() as session:
        rows = session.execute(
            select(Delivery.connector, func.min(Delivery.next_attempt_at))
            .where(Delivery.connector.in_(connector_names), *_open_by(until),
                   Delivery.next_attempt_at > after)
            .group_by(Delivery.connector)).all()
    return dict(rows)


def _claim(storage, connector, at: datetime,
           length: timedelta) -> tuple[list[Outgoing], dict[int, int], set[int]]:
    """Due deliveries leased to this worker for `length`, how often each was tried before,
    and which of them a push that stopped mid-call held last (see the module's doc)."""
    table = Delivery.__table__
    lease = {"next_attempt_at": at + length, "claimed_at": at}
    with storage.session() as session:
        query = (select(Delivery.id, Delivery.kind, Delivery.idempotency_key, Delivery.payload,
                        Delivery.attempts, Delivery.claimed_at)
                 .where(*_due(connector.name, at))
                 .order_by(Delivery.next_attempt_at, Delivery.id).limit(connector.max_batch))
        if locks_claimed_rows(session):
            rows = session.execute(query.with_for_update(skip_locked=True)).all()
            for chunk in _chunks([r.id for r in rows]):
                session.execute(update(table).where(one_of(session, table.c.id, chunk)).values(**lease))
            rows = _note_interrupted(session, rows)
        else:
            # SQLite: read (and decode) the rows before any lock is taken, then lease only
            # the ones still due, so two workers never send one row and the write lock is
            # held for the UPDATEs alone.
            rows = session.execute(query).all()
            if rows:
                leased: set[int] = set()
                with storage.write_turn():
                    for chunk in _chunks([r.id for r in rows]):
                        leased.update(session.execute(
                            update(table).where(table.c.id.in_(chunk), *_due(connector.name, at))
                            .values(**lease).returning(table.c.id)).scalars())
                    rows = [r for r in rows if r.id in leased]
                    rows = _note_interrupted(session, rows)
                    session.commit()
        interrupted = {r.id for r in rows if r.claimed_at is not None}
        return ([Outgoing(r.id, r.kind, r.idempotency_key, r.payload) for r in rows],
                {r.id: (r.attempts or 0) + (r.id in interrupted) for r in rows}, interrupted)


def _note_interrupted(session: Session, rows) -> list:
    """An attempt for each claimed row whose last push stopped mid-call; it counts as a try.
    The rows to send: one whose tries are used up that way is dead instead, since it may be
    what stops its worker (and would stop every worker that claims it)."""
    lost = [r for r in rows if r.claimed_at is not None]
    if not lost:
        return rows
    execute_many(session.connection(), insert(DeliveryAttempt.__table__), [
        {"delivery_id": r.id, "at": r.claimed_at, "outcome": INTERRUPTED,
         "message": INTERRUPTED_MESSAGE} for r in lost])
    changes, dead = [], set()
    for r in lost:
        tried = (r.attempts or 0) + 1
        changes.append({"id": r.id, "attempts": tried})
        if tried >= MAX_ATTEMPTS:
            dead.add(r.id)
            changes[-1].update(status=DEAD, claimed_at=None, last_error=(
                f"{tried} tries, the last one stopped mid-call (a worker crash): not tried again"))
    update_by_key(session.connection(), Delivery.__table__, changes)
    if dead:
        log.error("%d deliveries dead: their last try stopped mid-call, their tries ran out",
                  len(dead))
    return [r for r in rows if r.id not in dead]


class Lease:
    """A push's hold on the deliveries it claimed at `claimed_at`, renewed by a thread every
    third of its length until the tool has answered: only a push that stopped lets them
    fall due again. Renewals extend from the claim's clock by the real time elapsed,
    so a push on a simulated calendar (`now` given) keeps its rows too."""

    def __init__(self, storage, delivery_ids: list[int], claimed_at: datetime, length: timedelta):
        self.storage, self.ids, self.claimed_at = storage, delivery_ids, claimed_at
        self.length = length
        self._started = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="push-lease", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()

    def _keep(self) -> None:
        while not self._done.wait(self.length.total_seconds() / RENEWALS_PER_LEASE):
            try:
                self.renew()
            except Exception:  # the next renewal tries again; the lease has room for two misses
                log.warning("could not renew the lease of %d deliveries", len(self.ids),
                            exc_info=True)

    def renew(self) -> int:
        """Push the lease one length ahead of now; how many deliveries it still holds.

        Only rows this push still holds: recorded ones have claimed_at cleared, and rows
        another push claimed after a lapse carry that push's claim time."""
        until = self.claimed_at + timedelta(seconds=time.monotonic() - self._started) + self.length
        table = Delivery.__table__
        held = 0
        with self.storage.write_turn(), self.storage.session() as session:
            for chunk in _chunks(self.ids):
                held += session.execute(update(table).where(
                    one_of(session, table.c.id, chunk), table.c.claimed_at == self.claimed_at,
                    table.c.status.in_((QUEUED, RETRYING))).values(next_attempt_at=until)).rowcount
        return held


def _coalesce(items: list[Outgoing]) -> tuple[list[Outgoing], dict[int, int]]:
    """Only the newest profile update per subscriber is sent; older ones → their successor."""
    newest: dict[int, int] = {}
    for item in items:
        if item.kind == "profile":
            sid = item.payload.get("subscriber_id")
            newest[sid] = max(newest.get(sid, 0), item.delivery_id)
    superseded = {i.delivery_id: newest[i.payload.get("subscriber_id")] for i in items
                  if i.kind == "profile" and newest[i.payload.get("subscriber_id")] != i.delivery_id}
    return [i for i in items if i.delivery_id not in superseded], superseded


def _send(connector, items: list[Outgoing]) -> dict:
    if not items:
        return {}
    try:
        results = connector.push(items)
    except Exception as exc:  # a connector bug must not lose the batch: retry, then dead letter
        log.exception("connector %s failed on a batch of %d", connector.name, len(items))
        results = {}
        default = RetryAfter(seconds=0.0, message=f"{type(exc).__name__}: {exc}")
    else:
        default = RetryAfter(seconds=0.0, message=f"{connector.name} returned no result for it")
    return {i.delivery_id: results.get(i.delivery_id, default) for i in items}


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    return BACKOFF(state)


def _wait(result: RetryAfter, attempt: int) -> float:
    # A 429 with Retry-After says exactly when the tool takes us back; otherwise back off,
    # never sooner than the tool asked.
    if result.http_status == 429 and result.seconds > 0:
        return max(1.0, result.seconds)
    return max(1.0, result.seconds, backoff(attempt))


def scrub(text: str | None, secrets: list[str]) -> str | None:
    """The text with every secret (Settings.secrets()) blanked out, truncated for the log."""
    if text is None:
        return None
    for secret in secrets:
        text = text.replace(secret, "***")
    return truncate(text)


def _record(storage, settings, connector: str, items: list[Outgoing], results: dict,
            superseded: dict[int, int], at: datetime, tried_before: dict[int, int]) -> Counter:
    """One attempt row per delivery sent, and each delivery's new status, in one transaction."""
    counts: Counter = Counter({"cancelled": len(superseded)})
    # Worked out before the transaction: inside it, the first statement writes (SQLite's
    # lock is taken at once) and the lock is held for the writes alone.
    changes = [{"id": old, "status": CANCELLED, "last_error": f"superseded by delivery {new}",
                "claimed_at": None} for old, new in superseded.items()]
    attempts = []
    # Once per batch: listing them walks every setting, which cost a fair part of each
    # delivery's outcome when done per delivery.
    secrets = settings.secrets()
    for item in items:
        result, tried = results[item.delivery_id], tried_before[item.delivery_id] + 1
        if isinstance(result, Held):
            # Never sent: no attempt; due again when the window has room (a guessed hold: at
            # once, for the limiter to say).
            due = at if result.guessed else at + timedelta(seconds=result.seconds)
            changes.append({"id": item.delivery_id, "attempts": tried - 1, "claimed_at": None,
                            "next_attempt_at": due})
            counts["held"] += 1
            continue
        wait = _wait(result, tried) if isinstance(result, RetryAfter) else None
        message = scrub(result.message, secrets)
        attempts.append({"delivery_id": item.delivery_id, "at": at, "outcome": result.outcome,
                         "http_status": result.http_status, "latency_ms": result.latency_ms,
                         "request_id": (scrub(result.request_id, secrets) or "")[:120] or None,
                         "retry_after": wait, "message": message})
        change = {"id": item.delivery_id, "attempts": tried, "claimed_at": None}
        if isinstance(result, Sent):
            change.update(status=SENT, sent_at=at, last_error=None)
        elif wait is not None and tried < MAX_ATTEMPTS:
            change.update(status=RETRYING, next_attempt_at=at + timedelta(seconds=wait),
                          last_error=message)
        else:
            change.update(status=DEAD, last_error=message)
        counts[_OUTCOME[change["status"]]] += 1
        changes.append(change)
    with storage.write_turn(), storage.session() as session:
        execute_many(session.connection(), insert(DeliveryAttempt.__table__), attempts)
        update_by_key(session.connection(), Delivery.__table__, changes)
        sent = [i for i in items
                if i.kind == "profile" and isinstance(results[i.delivery_id], Sent)]
        _cancel_older_profiles(session, connector, sent)
        # Compliance: an erase request the tool accepted keeps no email or phone (hub.sync.compliance).
        erased = [i.delivery_id for i in items
                  if i.kind == "erase" and isinstance(results[i.delivery_id], Sent)]
        if erased:

            compliance.forget_sent_erasures(session, erased)
    return counts


def _cancel_older_profiles(session: Session, connector: str, sent: list[Outgoing]) -> None:
    """A profile just sent makes older pending ones of that subscriber stale: never send them."""
    newest: dict[int, int] = {}
    for item in sent:
        sid = item.payload.get("subscriber_id")
        newest[sid] = max(newest.get(sid, 0), item.delivery_id)
    pending = []
    for chunk in _chunks(list(newest)):
        # Found through the index by subscriber, a few rows per person: connector and status
        # are compared as expressions so that no database takes the queue index instead, which
        # holds every queued row of the tool (a backlog of thousands during a burst, each
        # read to test its subscriber; PostgreSQL chose it when its statistics saw few).
        pending += session.execute(select(Delivery.id, Delivery.subscriber_id).where(
            Delivery.kind == "profile", Delivery.connector + "" == connector,
            one_of(session, Delivery.subscriber_id, chunk),
            (type_coerce(Delivery.status, String) + "").in_((QUEUED.value, RETRYING.value)))).all()
    changes = [{"id": row_id, "status": CANCELLED,
                "last_error": f"superseded by delivery {newest[sid]}"}
               for row_id, sid in pending if row_id < newest[sid]]
    update_by_key(session.connection(), Delivery.__table__, changes)


# Support actions ----------------------------------------------------------------------

def retry(session: Session, delivery_ids=None, dead: bool = False,
          now: datetime | None = None) -> int:
    """Queue deliveries again now (`hub deliveries retry --id N` / `--dead`); how many."""
    if not delivery_ids and not dead:
        return 0
    query = update(Delivery)
    if delivery_ids:
        query = query.where(Delivery.id.in_(list(delivery_ids)), Delivery.status != QUEUED)
    else:
        query = query.where(Delivery.status == DEAD)
    query = query.values(status=QUEUED, attempts=0, next_attempt_at=now or now_utc(),
                         last_error=None)
    return session.execute(query.execution_options(synchronize_session=False)).rowcount


__all__ = ["plan", "plan_triggers", "plan_consent", "plan_sweep", "mark_dirty",
           "flush_pending_profiles", "plan_due_profiles", "profile_fields", "monthly_amount", "enabled_connectors",
           "push_batch", "retry", "planned_connectors", "backoff", "MAX_ATTEMPTS", "delivery_row",
           "insert_deliveries"]


# Compliance: erase requests to the tools ------------------------------------------------

def erase_targets(settings) -> list[str]:
    """Enabled connectors that can delete a person (kind "erase"), whatever their mapping's
    `send` says: deleting a person on request is not a sync preference."""
    return [n for n in enabled_connectors(settings)
            if "erase" in getattr(connectors.CONNECTORS[n], "kinds", ())]


def plan_erasures(unit: UnitOfWork, settings, erased: list[dict]) -> int:
    """One "erase" delivery per erased person per tool that can delete them.

    The payload holds the email and phone the tool's deletion call needs and a hash
    (`subject`); once the tool accepted the request, `forget_sent_erasures` blanks the
    email and phone, so only the hash stays (proof that the request went out).
    A delivery that ends dead keeps them, so staff can retry it: it is listed on the
    sync log's failing deliveries until it is sent.
    """
    rows = []
    for name in erase_targets(settings):
        for person in erased:
            if not person.get("email") and not person.get("phone"):
                continue
            payload = {"subscriber_id": person["subscriber_id"], "email": person.get("email"),
                       "phone": person.get("phone"), "subject": person.get("subject")}
            key = f"erase:{person['subscriber_id']}"
            rows.append(delivery_row(name, "erase", person["subscriber_id"], key, payload, False))
    return insert_deliveries(unit, rows)
