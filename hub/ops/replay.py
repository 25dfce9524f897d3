"""Replay stored events with a diff: per subscriber, what the replay changed (or, dry, would).

Each stored webhook goes through the drain's own apply path again (hub.sync.inbox.replay:
normalize → apply → rules → outbox) in one transaction; the diff is read from what that
path records: the Changes of each event, the triggers and deliveries it added. A dry run
then rolls the transaction back, so nothing is kept and nothing is pushed; the real run
commits the very same work. `rules_file` runs the rules of another rules.yaml (a change
under review) against the history.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from hub.db.unit import UnitOfWork
from hub.errors import ConfigError
from hub.models import FAILED, Delivery, InboxEvent, Subscriber, Trigger
from hub.sync import inbox
from hub.sync.rules import params as rule_params
from hub.sync.triggers import FIRED


@dataclass
class PersonDiff:
    """What a replay did to one subscriber."""

    subscriber_id: int | None
    email: str | None = None
    currency: str | None = None
    events: list[int] = field(default_factory=list)  # inbox row ids replayed for them
    changed: list[dict] = field(default_factory=list)  # Changes.changed entries, stage apart
    stage: tuple[str | None, str | None] | None = None
    triggers: list[str] = field(default_factory=list)
    deliveries: list[str] = field(default_factory=list)  # "klaviyo profile", "hubspot event Welcome Step 1"

    def empty(self) -> bool:
        return not (self.changed or self.stage or self.triggers or self.deliveries)


@dataclass
class ReplayedRow:
    """One stored event replayed: its status before and after, the new attempt's entries."""

    id: int
    source: str
    topic: str
    before: str
    status: str
    error: str | None
    entries: list[dict]
    subscriber_id: int | None


@dataclass
class Replay:
    """The outcome of one replay: per subscriber, and per replayed row."""

    dry_run: bool
    rows: list[ReplayedRow] = field(default_factory=list)
    people: list[PersonDiff] = field(default_factory=list)

    def changed_people(self) -> list[PersonDiff]:
        return [p for p in self.people if not p.empty()]


def select_events(since: datetime | None = None, until: datetime | None = None,
                  source: str | None = None, ids=(), failed: bool = False, topic: str | None = None):
    """The stored events to replay, oldest first: received in [since, until), of one source
    (and topic), the given inbox ids or platform event ids, or every failed one."""
    query = select(InboxEvent)
    if failed:
        query = query.where(InboxEvent.is_open(), InboxEvent.status == FAILED)
    if ids:
        numbers = [int(i) for i in ids if str(i).isdigit()]
        query = query.where(or_(InboxEvent.id.in_(numbers), InboxEvent.event_id.in_([str(i) for i in ids])))
    if since is not None:
        query = query.where(InboxEvent.received_at >= since)
    if until is not None:
        query = query.where(InboxEvent.received_at < until)
    if source:
        query = query.where(InboxEvent.source == source)
    if topic:
        query = query.where(InboxEvent.topic == topic)
    return query.order_by(InboxEvent.id)


def run(storage, settings, query, dry_run: bool, rules_file: str | Path | None = None) -> Replay:
    """Replay the events `query` selects (see select_events) and say what changed per subscriber;
    with `dry_run` nothing is kept. Planned deliveries of a real run wait for the next push."""
    with _rules_from(settings, rules_file) as run_settings, storage.session() as session:
        rows = list(session.scalars(query))
        result = replay_rows(session, rows, run_settings, dry_run)
        if dry_run:
            session.rollback()
    return result


def replay_rows(session: Session, rows: list[InboxEvent], settings, dry_run: bool = False) -> Replay:
    """Replay `rows` in the session's transaction (the caller commits or rolls back) and
    collect the diff before anything is committed."""
    last_trigger = session.scalar(select(func.max(Trigger.id))) or 0
    last_delivery = session.scalar(select(func.max(Delivery.id))) or 0
    result = Replay(dry_run=dry_run)
    people: dict[int | None, PersonDiff] = {}
    unit = UnitOfWork(session)
    for row in rows:
        before = row.status
        entries = inbox.replay(unit, row, settings)
        for entry in entries:
            person = people.setdefault(entry.get("subscriber_id"), PersonDiff(entry.get("subscriber_id")))
            if row.id not in person.events:
                person.events.append(row.id)
            for change in entry.get("changed") or []:
                if change.get("what") == "rules" and change.get("field") == "stage":
                    first = person.stage[0] if person.stage else change.get("from")
                    person.stage = (first, change.get("to"))
                elif not (change.get("what") == "rules" and change.get("field") == "stage_reason"):
                    _merge(person.changed, change)
        result.rows.append(ReplayedRow(row.id, row.source, row.topic, before, row.status, row.error,
                                       entries, row.subscriber_id))
    inbox.after_batch(unit, settings)  # the profile deliveries the replayed rows made due
    session.flush()
    names = {}
    for trigger in session.scalars(select(Trigger).where(Trigger.id > last_trigger).order_by(Trigger.id)):
        names[trigger.id] = trigger.name
        # Stored but not sent: a moved date cancelled it, or history skipped it.
        said = trigger.name if trigger.status == FIRED else f"{trigger.name} ({trigger.status})"
        people.setdefault(trigger.subscriber_id, PersonDiff(trigger.subscriber_id)).triggers.append(said)
    for delivery in session.scalars(select(Delivery).where(Delivery.id > last_delivery).order_by(Delivery.id)):
        said = f"{delivery.connector} {delivery.kind}"
        if delivery.trigger_id in names:
            said += f" {names[delivery.trigger_id]}"
        people.setdefault(delivery.subscriber_id, PersonDiff(delivery.subscriber_id)).deliveries.append(said)
    known = {s.id: s for s in session.scalars(select(Subscriber).where(
        Subscriber.id.in_([i for i in people if i is not None])))}
    for subscriber_id in sorted(people, key=lambda i: (i is None, i or 0)):
        person = people[subscriber_id]
        person.changed = [c for c in person.changed if c.get("from") != c.get("to")]
        if person.stage and person.stage[0] == person.stage[1]:
            person.stage = None
        if subscriber_id in known:
            person.email, person.currency = known[subscriber_id].email, known[subscriber_id].currency
        result.people.append(person)
    return result


def _merge(changed: list[dict], change: dict) -> None:
    """Add one change to a subscriber's net changes: a field changed by several events shows
    its value before the first and after the last."""
    for held in changed:
        if (held.get("what"), held.get("field")) == (change.get("what"), change.get("field")):
            held["to"] = change.get("to")
            return
    changed.append(dict(change))


@contextmanager
def _rules_from(settings, rules_file: str | Path | None):
    """`settings` whose rules are those of `rules_file` (validated first; ConfigError names
    a bad key); the connectors' field maps stay those of the configured mappings folder."""
    if rules_file is None:
        yield settings
        return
    path = Path(rules_file)
    rule_params.load(path)  # a bad file stops here, before any event is touched
    # Rules are read from <HUB_MAPPINGS_DIR>/rules.yaml: a folder of links to the configured
    # maps with this rules file in place.
    with tempfile.TemporaryDirectory(prefix="hub-rules-") as folder:
        configured = Path(settings.HUB_MAPPINGS_DIR)
        if not configured.is_dir():
            raise ConfigError(f"HUB_MAPPINGS_DIR {configured} is not a folder")
        for item in configured.iterdir():
            if item.name != "rules.yaml":
                (Path(folder) / item.name).symlink_to(item.resolve())
        shutil.copyfile(path, Path(folder) / "rules.yaml")
        yield dataclasses.replace(settings, HUB_MAPPINGS_DIR=folder)
