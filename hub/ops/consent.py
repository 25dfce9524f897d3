"""Consent drift: does each email/CRM tool hold the marketing consent the source of truth gave?

The source of truth of a person's consent on a channel is the platform where it was last given
or withdrawn: what `Subscriber.consent` holds (state, source, time; hub.sync.apply). Each tool
that records consent on the channel, as mapped, is read back through its API, in pages and
under its rate limits (the same limiter as the pushes, shared through Redis):
- Klaviyo: every profile with its email and SMS subscriptions (Get Profiles, 100 a page);
- HubSpot: the mapped subscription type's status, one call per person with email consent;
- ActiveCampaign: the consent list's active subscribers (100 a page), then the list dates
  of the drifted ones.
A person the tool does not hold as subscribed counts as "not subscribed" there. People with a
consent delivery still queued for the tool are skipped: the outbox has not caught up yet.

A drift is "still_subscribed" (withdrawn at the source, the tool still mails them: the first
line on the dashboard) or "not_subscribed". Where the tool's own record is newer than the
source's (the person used the tool's unsubscribe link) the tool is the later word: the drift is
shown but `fix` leaves it. `fix` plans one consent delivery per other drift, through the outbox,
so it is sent, retried and logged like any other. Each run replaces the rows of the table
consent_drift and a summary in the checkpoint "consent:drift".
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

import connectors
from connectors.base import Holding, RetryAfter, Sent
from hub.db.unit import UnitOfWork
from hub.models import QUEUED, RETRYING, ConsentDrift, Delivery, Subscriber
from hub.ops.backfill import load_checkpoint, save_checkpoint
from hub.sync import outbox
from hub.values import iso, utc

log = logging.getLogger(__name__)

CHECKPOINT = "consent:drift"
STILL_SUBSCRIBED = "still_subscribed"
NOT_SUBSCRIBED = "not_subscribed"
READ_TRIES = 5  # a throttled or failing read is tried this often before the tool is given up
SHOWN = 200  # drifted people the sync log lists

# progress(tool, done, total or None): called as pages are read.
Progress = Callable[[str, int, int | None], None]


@dataclass
class Person:
    subscriber_id: int
    state: str  # "subscribed" | "unsubscribed"
    source: str | None
    at: str | None


@dataclass
class ToolReport:
    connector: str
    channels: list[str] = field(default_factory=list)
    read: int = 0  # records read from the tool
    checked: int = 0  # people compared
    drifted: int = 0
    still_subscribed: int = 0
    fixed: int = 0  # consent deliveries planned by fix
    error: str | None = None


@dataclass
class Report:
    checked_at: str
    tools: list[ToolReport] = field(default_factory=list)

    @property
    def drifted(self) -> int:
        return sum(t.drifted for t in self.tools)

    @property
    def still_subscribed(self) -> int:
        return sum(t.still_subscribed for t in self.tools)

    @property
    def fixed(self) -> int:
        return sum(t.fixed for t in self.tools)


class ReadFailed(Exception):
    """The tool would not answer a read: the tool's report says why, the others go on."""


def _read(call: Callable[..., tuple], *args, sleep=time.sleep) -> tuple:
    """call(*args) → (Result, *data): the data, read again after a throttle or an outage
    (after the wait the tool asked for)."""
    for _ in range(READ_TRIES):
        answer = call(*args)
        result = answer[0]
        if isinstance(result, Sent):
            return answer[1:]
        if not isinstance(result, RetryAfter):
            raise ReadFailed(result.message or f"HTTP {result.http_status}")
        sleep(max(1.0, result.seconds))
    raise ReadFailed(f"still refused after {READ_TRIES} tries: {result.message}")


def source_consent(session: Session) -> dict[str, dict[str, Person]]:
    """channel → identifier (email or phone) → the source of truth's consent, for every person
    the hub holds a given or withdrawn consent of (erased people are nobody's)."""
    found: dict[str, dict[str, Person]] = {"email": {}, "sms": {}}
    rows = session.execute(select(Subscriber.id, Subscriber.email, Subscriber.phone, Subscriber.consent)
                           .where(Subscriber.erased_at.is_(None)))
    for subscriber_id, email, phone, consent in rows:
        for channel, identifier in (("email", email), ("sms", phone)):
            held = (consent or {}).get(channel) or {}
            if identifier and held.get("state") in ("subscribed", "unsubscribed"):
                found[channel][identifier.lower() if channel == "email" else identifier] = Person(
                    subscriber_id, held["state"], held.get("source"), held.get("at"))
    return found


def _waiting(session: Session, connector: str) -> set[int]:
    """People with a consent delivery to `connector` not sent yet."""
    return set(session.scalars(select(Delivery.subscriber_id).where(
        Delivery.connector == connector, Delivery.kind == "consent",
        Delivery.status.in_((QUEUED, RETRYING)))))


# Reading each tool -------------------------------------------------------------------

def _klaviyo(tool, people, report: ToolReport, progress: Progress) -> dict[tuple[str, str], Holding]:
    held, cursor = {}, None
    while True:
        page, cursor = _read(tool.consent_page, cursor)
        report.read += len(page)
        held.update({(h.channel, h.identifier): h for h in page
                     if h.identifier in people.get(h.channel, {})})
        progress(report.connector, report.read, None)
        if cursor is None:
            return held


def _hubspot(tool, people, report: ToolReport, progress: Progress) -> dict[tuple[str, str], Holding]:
    held, emails = {}, list(people.get("email", {}))
    for done, email in enumerate(emails, 1):
        (one,) = _read(tool.consent_status, email)
        report.read += 1
        held[("email", email)] = one
        if done % 100 == 0 or done == len(emails):
            progress(report.connector, done, len(emails))
    return held


def _activecampaign(tool, people, report: ToolReport, progress: Progress) -> dict[tuple[str, str], Holding]:
    held, offset = {}, 0
    while offset is not None:
        page, offset = _read(tool.subscribed_page, offset)
        report.read += len(page)
        held.update({("email", h.identifier): h for h in page})
        progress(report.connector, report.read, None)
    # Since when the drifted ones are subscribed: their list membership, one call each.
    for key, one in list(held.items()):
        person = people.get("email", {}).get(key[1])
        if person is not None and person.state == "unsubscribed" and one.ref:
            (dated,) = _read(tool.list_status, one.ref, key[1])
            held[key] = dated
    return held


READERS = {"klaviyo": _klaviyo, "hubspot": _hubspot, "activecampaign": _activecampaign}


def tools_to_check(settings) -> list[tuple[str, list[str]]]:
    """(connector, channels) of each enabled tool that records consent and can be read back."""
    found = []
    for name in outbox.enabled_connectors(settings):
        mapping = connectors.load_mapping(settings, name)
        cls = connectors.CONNECTORS[name]
        channels = [c for c in ("email", "sms") if cls.takes_consent(mapping, c)]
        if name in READERS and "consent" in mapping["send"] and channels:
            found.append((name, channels))
    return found


# The run -----------------------------------------------------------------------------

def run(hub, fix: bool = False, tools: list[str] | None = None, now: datetime | None = None,
        progress: Progress | None = None, limiter=None) -> Report:
    """Compare every tool's consent with the source of truth's, store the report, and with
    `fix` plan one consent delivery per drift the source has the later word on."""
    now = utc(now) or datetime.now(timezone.utc)
    report = Report(checked_at=iso(now))
    limiter = limiter or outbox.limiter_for(_redis(hub))
    with hub.storage.session() as session:
        people = source_consent(session)
    rows: list[dict] = []
    for name, channels in tools_to_check(hub.settings):
        if tools and name not in tools:
            continue
        one = ToolReport(connector=name, channels=channels)
        report.tools.append(one)
        wanted = {c: people[c] for c in channels}
        try:
            tool = outbox.connector_for(name, hub.settings, limiter)
            held = READERS[name](tool, wanted, one, progress or _quiet)
        except ReadFailed as exc:
            one.error = str(exc)[:500]
            log.warning("consent drift: reading %s failed: %s", name, one.error)
            continue
        with hub.storage.session() as session:
            waiting = _waiting(session, name)
        for channel in channels:
            for identifier, person in wanted[channel].items():
                if person.subscriber_id in waiting:
                    continue
                one.checked += 1
                holding = held.get((channel, identifier))
                tool_state = holding.state if holding else "unsubscribed"
                if tool_state == person.state:
                    continue
                drift = _drift(name, channel, person, tool_state, holding, now)
                one.drifted += 1
                one.still_subscribed += drift["kind"] == STILL_SUBSCRIBED
                rows.append(drift)
    with hub.storage.session() as session:
        if fix:
            _plan_fixes(session, hub.settings, rows, report, now)
        _store(session, report, rows, tools)
    if fix and report.fixed:
        _request_pushes(hub, {t.connector for t in report.tools if t.fixed})
    return report


def _quiet(tool: str, done: int, total: int | None) -> None:
    """No progress shown (the cron job)."""


def _redis(hub):
    """The Redis connection the pushes' rate limits live in, or None when Redis is down (a
    limiter of this process's own then keeps this run under the limits)."""
    try:
        connection = hub.queues.connection
        connection.ping()
        return connection
    except Exception as exc:  # Redis down or not configured: this run still reads the tools
        log.info("consent drift: rate limits kept in this process (Redis: %s)", type(exc).__name__)
        return None


def _request_pushes(hub, names: set[str]) -> None:
    try:
        for name in sorted(names):
            hub.queues.request_push(name)
    except Exception as exc:  # the deliveries wait in the outbox; the backstop job sends them
        log.warning("consent drift: push not requested (%s); the planned deliveries wait", exc)


def _drift(connector: str, channel: str, person: Person, tool_state: str, holding: Holding | None,
           now: datetime) -> dict:
    since = _time(holding.since) if holding else None
    source_at = _time(person.at)
    return {"subscriber_id": person.subscriber_id, "connector": connector, "channel": channel,
            "kind": STILL_SUBSCRIBED if person.state == "unsubscribed" else NOT_SUBSCRIBED,
            "source": person.source, "source_state": person.state, "source_at": source_at,
            "tool_state": tool_state, "tool_since": since,
            "tool_newer": bool(since and source_at and since > source_at),
            "fix_delivery_id": None, "found_at": now}


def _time(value) -> datetime | None:
    if not value:
        return None
    try:
        return utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except ValueError:
        return None


def _plan_fixes(session: Session, settings, rows: list[dict], report: Report, now: datetime) -> None:
    """One consent delivery per drift the source has the later word on: the source's state, at
    the source's time, keyed by this run so a drift that outlives a fix is pushed again."""
    by_tool = {t.connector: t for t in report.tools}
    fixable = [r for r in rows if not r["tool_newer"]]
    subscribers = {s.id: s for s in session.scalars(select(Subscriber).where(
        Subscriber.id.in_({r["subscriber_id"] for r in fixable})))} if fixable else {}
    for row in fixable:
        person = subscribers.get(row["subscriber_id"])
        if person is None:
            continue
        at = iso(row["source_at"])
        key = (f"consent:{person.id}:{row['channel']}:{row['source_state']}:{at}"
               f":drift:{iso(now)}")
        payload = {"subscriber_id": person.id, "email": person.email, "phone": person.phone,
                   "channel": row["channel"], "state": row["source_state"], "consented_at": at,
                   "source": row["source"], "history": False}
        fix = outbox.delivery_row(row["connector"], "consent", person.id, key, payload, False)
        if outbox.insert_deliveries(UnitOfWork(session), [fix]):
            row["fix_delivery_id"] = session.scalar(select(Delivery.id).where(
                Delivery.connector == row["connector"], Delivery.idempotency_key == key[:200]))
            by_tool[row["connector"]].fixed += 1


def _store(session: Session, report: Report, rows: list[dict], tools: list[str] | None) -> None:
    """The report replaces the last one (of the tools read, when only some were)."""
    failed = [t.connector for t in report.tools if t.error is not None]
    if tools:  # only these were read: the others' rows stand
        session.execute(delete(ConsentDrift).where(ConsentDrift.connector.in_(set(tools) - set(failed))))
    else:  # a tool that failed keeps its last rows; one switched off since has none
        session.execute(delete(ConsentDrift).where(ConsentDrift.connector.not_in(failed)))
    session.add_all(ConsentDrift(**row) for row in rows)
    last = load_checkpoint(session, CHECKPOINT) or {}
    by_tool = dict(last.get("tools") or {}) if tools else {}
    for one in report.tools:
        by_tool[one.connector] = {"read": one.read, "checked": one.checked, "drifted": one.drifted,
                                  "still_subscribed": one.still_subscribed, "fixed": one.fixed,
                                  "error": one.error, "checked_at": report.checked_at}
    save_checkpoint(session, CHECKPOINT, {"checked_at": report.checked_at, "tools": by_tool})


# Reading the last report (sync log, dashboard) ---------------------------------------

def last_report(session: Session) -> dict:
    """{"checked_at", "tools": {name: counts}, "still_subscribed", "drifted"} of the last run."""
    saved = load_checkpoint(session, CHECKPOINT) or {"checked_at": None, "tools": {}}
    counts = dict(session.execute(select(ConsentDrift.kind, func.count()).group_by(ConsentDrift.kind)).all())
    return {**saved, "still_subscribed": counts.get(STILL_SUBSCRIBED, 0), "drifted": sum(counts.values())}


def drifted_people(session: Session, connector: str | None = None, kind: str | None = None,
                   limit: int = SHOWN) -> list[ConsentDrift]:
    """The drifts of the last run (of one tool, of one kind), withdrawn consents a tool still
    mails to first, most recent change at the source first."""
    query = select(ConsentDrift)
    if connector:
        query = query.where(ConsentDrift.connector == connector)
    if kind:
        query = query.where(ConsentDrift.kind == kind)
    order = (ConsentDrift.kind != STILL_SUBSCRIBED, ConsentDrift.source_at.desc(), ConsentDrift.id)
    return list(session.scalars(query.order_by(*order).limit(limit)))


__all__ = ["run", "Report", "ToolReport", "last_report", "drifted_people", "source_consent",
           "tools_to_check", "STILL_SUBSCRIBED", "NOT_SUBSCRIBED"]
