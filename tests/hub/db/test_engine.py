"""SQLite storage: the inbox keeps a file of its own, so webhooks never wait for a drain."""
from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
import time

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import make_url, select, update
from sqlalchemy import text as sql
from sqlalchemy.exc import OperationalError

from hub.db import dialect
from hub.db.engine import Storage, alembic_config, inbox_path
from hub.models import Base, Checkpoint, InboxEvent
from webhooks import Envelope


def envelope(event_id: str) -> Envelope:
    return Envelope(event_id=event_id, topic="customer.created", shop=None, api_version=None,
                    triggered_at=None)


def test_the_inbox_lives_beside_the_database_in_a_file_of_its_own(tmp_path):
    storage = Storage(f"sqlite:///{tmp_path / 'hub.db'}")
    storage.upgrade()
    storage.inbox_writer.write("stripe", envelope("evt_1"), {}, b"{}")
    storage.dispose()
    assert inbox_path(f"sqlite:///{tmp_path / 'hub.db'}") == tmp_path / "hub-inbox.db"
    with sqlite3.connect(tmp_path / "hub-inbox.db") as inbox:
        assert inbox.execute("select event_id from inbox_event").fetchall() == [("evt_1",)]
    with sqlite3.connect(tmp_path / "hub.db") as main:
        tables = {r[0] for r in main.execute("select name from sqlite_master where type = 'table'")}
    assert "inbox_event" not in tables and "subscriber" in tables


def test_a_webhook_is_stored_while_a_drain_holds_the_model_write_lock(tmp_path):
    storage = Storage(f"sqlite:///{tmp_path / 'hub.db'}")
    storage.upgrade()
    stored = []
    with storage.session() as drain:
        # What a drain does first (hub.sync.inbox.claim_batch): take the model's write lock, and
        # keep it for the whole batch.
        drain.execute(update(Checkpoint).where(Checkpoint.name == "").values(name=Checkpoint.name))
        writer = threading.Thread(target=lambda: stored.append(
            (storage.inbox_writer.write("stripe", envelope("evt_2"), {}, b"{}"), time.monotonic())))
        started = time.monotonic()
        writer.start()
        writer.join(timeout=10)
        assert stored and stored[0][0] is True, "the webhook waited for the drain's transaction"
        assert stored[0][1] - started < 2
        assert drain.scalar(select(InboxEvent.event_id)) == "evt_2"
    storage.dispose()


def test_upgrading_a_database_moves_its_stored_webhooks_to_the_inbox_file(tmp_path):
    storage = Storage(f"sqlite:///{tmp_path / 'hub.db'}")
    command.upgrade(alembic_config(storage.engine), "0001")
    with storage.engine.begin() as conn:
        assert conn.exec_driver_sql("select count(*) from main.sqlite_master where name = 'inbox_event'").scalar() == 1
    storage.inbox_writer.write("shopify", envelope("evt_old"), {"x-shopify-topic": "customers/create"},
                               b'{"id": 1}')
    storage.inbox_writer.close()
    storage.upgrade()
    with storage.session() as session:
        [row] = session.scalars(select(InboxEvent)).all()
        assert (row.source, row.event_id, row.body, row.headers) == (
            "shopify", "evt_old", b'{"id": 1}', {"x-shopify-topic": "customers/create"})
    # Ids go on from the moved rows, and the dedupe constraint came along.
    assert storage.inbox_writer.write("shopify", envelope("evt_new"), {}, b"{}") is True
    assert storage.inbox_writer.write("shopify", envelope("evt_old"), {}, b"{}") is False
    with sqlite3.connect(tmp_path / "hub-inbox.db") as inbox:
        assert [r[0] for r in inbox.execute("select event_id from inbox_event order by id")] == ["evt_old", "evt_new"]
    storage.dispose()


def test_json_columns_keep_what_the_standard_library_kept(tmp_path):
    # JSON columns are written by orjson; an integer beyond 64 bits (which orjson refuses)
    # still goes in exactly, and text outside ASCII comes back as it was.
    from hub.models import Subscriber

    storage = Storage(f"sqlite:///{tmp_path / 'hub.db'}")
    storage.upgrade()
    with storage.session() as session:
        session.add(Subscriber(email="zoe@example.com", cards={"big": 10 ** 20, "name": "Zoë 🚲"}))
    with storage.session() as session:
        person = session.scalars(select(Subscriber)).one()
        assert person.cards == {"big": 10 ** 20, "name": "Zoë 🚲"}
    storage.dispose()


def test_the_webhook_path_stores_times_as_sqlalchemy_does(tmp_path):
    # A whole-second time (Stripe's `created`) keeps its ".000000": SQLite compares the text,
    # so a time written without it would sort before the same instant written by SQLAlchemy.
    from datetime import datetime, timezone

    storage = Storage(f"sqlite:///{tmp_path / 'hub.db'}")
    storage.upgrade()
    at = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    storage.inbox_writer.write("stripe", Envelope(event_id="evt_t", topic="customer.created", triggered_at=at),
                               {}, b"{}")
    with storage.engine.connect() as conn:
        stored = conn.exec_driver_sql("select triggered_at from inbox_event").scalar()
        assert conn.execute(select(InboxEvent.id).where(InboxEvent.triggered_at == at)).scalar() is not None
    assert stored == "2026-03-01 12:00:00.000000"
    storage.inbox_writer.close()
    storage.dispose()


def test_json_is_read_exactly_as_the_standard_library_reads_it():
    import json

    from hub.values import json_value

    texts = ['{"id": 100000000000000000000, "n": -9223372036854775809}', '{"a": 1.5, "b": [true, null]}',
             '[NaN, Infinity]', '"\\ud800"', '{"x": "zoë", "y": 0.1234567890123456789}', "1E400"]
    for text in texts:
        for given in (text, text.encode()):
            got, expected = json_value(given), json.loads(given)
            assert repr(got) == repr(expected), text
    lone_surrogate = '"\ud800"'  # a str no UTF-8 encoding holds
    assert json_value(lone_surrogate) == json.loads(lone_surrogate)
    with pytest.raises(ValueError):
        json_value(b"\xff")


def _stored_after(storage, post, threads: int) -> list[str]:
    """Run post(0) … post(threads - 1) on threads of their own; the inbox's event ids once
    they are done."""
    running = [threading.Thread(target=post, args=(w,), daemon=True) for w in range(threads)]
    for t in running:
        t.start()
    for t in running:
        t.join(timeout=60)
    with storage.engine.connect() as conn:
        return conn.execute(select(InboxEvent.event_id)).scalars().all()


def test_webhooks_arriving_on_many_threads_at_once_are_each_stored_once(tmp_path):
    # Group commit: threads that arrive while another commits wait for the next commit,
    # and each learns whether its own row was new.
    storage = Storage(f"sqlite:///{tmp_path / 'hub.db'}")
    storage.upgrade()
    ids = [f"evt_{i % 150}" for i in range(300)]  # each id twice
    answers: dict[int, bool] = {}
    start = threading.Barrier(30)

    def post(worker: int):
        start.wait()
        for n in range(worker, len(ids), 30):
            answers[n] = storage.inbox_writer.write("stripe", envelope(ids[n]), {}, b"{}")

    stored = _stored_after(storage, post, threads=30)
    assert sorted(stored) == sorted(set(ids))
    assert sum(answers.values()) == 150 and len(answers) == 300  # one "new" per id, every call answered
    storage.dispose()


class _SlowHandoffLock:
    """The writer's lock, slowed where hand-overs happen: after a release that leaves a row
    waiting in the queue or no leader, the releasing thread lets the others run first. A busy
    machine opens these moments only now and then."""

    def __init__(self, writer):
        self.writer = writer
        self._lock = threading.Lock()

    def __enter__(self):
        self._lock.acquire()

    def __exit__(self, *exc):
        handover = bool(self.writer._queue) or not self.writer._leading
        self._lock.release()
        if handover:
            time.sleep(0.001)


def test_a_webhook_arriving_as_the_last_leader_finishes_is_stored_and_answered(tmp_path):
    # A leader that found the queue empty hands over; a webhook that arrives just then leads
    # its own commit, and neither the old leader's exit nor the new one's loses or fails it.
    storage = Storage(f"sqlite:///{tmp_path / 'hub.db'}")
    storage.upgrade()
    storage.inbox_writer._lock = _SlowHandoffLock(storage.inbox_writer)
    failures: list[Exception] = []
    stored_new: list[bool] = []

    def post(worker: int):
        for n in range(40):
            try:
                stored_new.append(storage.inbox_writer.write("stripe", envelope(f"evt_{worker}_{n}"), {}, b"{}"))
            except Exception as exc:  # what a webhook would answer 503 for
                failures.append(exc)

    stored = _stored_after(storage, post, threads=8)
    assert failures == []
    assert len(stored) == 320 and stored_new == [True] * 320
    storage.dispose()


def test_webhooks_whose_connection_cannot_be_opened_fail_at_once_and_the_next_ones_are_stored(tmp_path):
    # The leader's first commit is slow while three more webhooks queue up behind it; the
    # connection for their commit cannot be opened (the database unreachable a moment). They
    # are answered with the error (the web path's 503, so the platform retries), not left
    # waiting; the leader's own row, already committed, is answered as stored.
    storage = Storage(f"sqlite:///{tmp_path / 'hub.db'}")
    storage.upgrade()
    writer = storage.inbox_writer
    opened = writer._connection
    queued, calls = threading.Event(), []

    def connection():
        calls.append(1)
        if len(calls) == 1:
            queued.wait(timeout=10)
            return opened()
        if len(calls) == 2:
            raise sqlite3.OperationalError("unable to open database file")
        return opened()

    writer._connection = connection
    answers: dict[str, object] = {}

    def post(event_id: str):
        try:
            answers[event_id] = writer.write("stripe", envelope(event_id), {}, b"{}")
        except Exception as exc:
            answers[event_id] = exc

    leader = threading.Thread(target=post, args=("evt_lead",), daemon=True)
    leader.start()
    while not writer._leading:
        time.sleep(0.001)
    others = [threading.Thread(target=post, args=(f"evt_{n}",), daemon=True) for n in range(3)]
    for t in others:
        t.start()
    while len(writer._queue) < 3:
        time.sleep(0.001)
    queued.set()
    for t in [leader, *others]:
        t.join(timeout=10)
    assert answers["evt_lead"] is True
    assert [type(answers.get(f"evt_{n}")).__name__ for n in range(3)] == ["OperationalError"] * 3
    assert writer.write("stripe", envelope("evt_0"), {}, b"{}") is True  # the platform's retry
    with storage.engine.connect() as conn:
        assert sorted(conn.execute(select(InboxEvent.event_id)).scalars()) == ["evt_0", "evt_lead"]
    storage.dispose()


def test_times_are_stored_in_sqlite_as_sqlalchemy_would_store_them(tmp_path):
    from datetime import datetime, timedelta, timezone
    from zoneinfo import ZoneInfo

    from sqlalchemy import TypeDecorator
    from sqlalchemy.dialects import sqlite

    from hub.models import Subscriber
    from hub.models.base import UTCDateTime

    dialect = sqlite.dialect()
    column_type = UTCDateTime().dialect_impl(dialect)
    ours = column_type.bind_processor(dialect)
    theirs = TypeDecorator.bind_processor(column_type, dialect)  # SQLAlchemy's own two steps
    eastern = timezone(timedelta(hours=-5))
    times = [datetime(2026, 12, 1, 23, 30, tzinfo=eastern), datetime(2026, 3, 1, 0, 0, 0, 7, timezone.utc),
             datetime(999, 1, 2, 3, 4, 5, 600000, timezone.utc),
             datetime(2026, 6, 30, 23, 59, 59, 999999, timezone.utc),
             datetime(2026, 7, 1, 1, 0, tzinfo=ZoneInfo("Europe/Berlin")), None]
    assert [ours(t) for t in times] == [theirs(t) for t in times]
    assert ours(times[0]) == "2026-12-02 04:30:00.000000"
    with pytest.raises(ValueError, match="naive datetime"):
        ours(datetime(2026, 12, 1))
    storage = Storage(f"sqlite:///{tmp_path / 'hub.db'}")
    storage.upgrade()
    with storage.session() as session:
        session.add(Subscriber(email="a@example.com", first_seen_at=times[0]))
    with storage.session() as session:
        assert session.scalars(select(Subscriber.first_seen_at)).one() == times[0]
    storage.dispose()


def test_a_lone_webhook_is_committed_when_it_is_answered_and_leaves_sessions_transactional(tmp_path):
    from datetime import datetime, timezone

    from sqlalchemy.orm import Session

    storage = Storage(f"sqlite:///{tmp_path / 'hub.db'}")
    storage.upgrade()
    assert storage.inbox_writer.write("stripe", envelope("evt_1"), {}, b"{}") is True
    with sqlite3.connect(tmp_path / "hub-inbox.db") as other:  # seen by another connection at once
        assert other.execute("select event_id from inbox_event").fetchall() == [("evt_1",)]
    assert storage.inbox_writer.write("stripe", envelope("evt_1"), {}, b"{}") is False
    storage.inbox_writer.close()
    # The writer's connection commits each statement by itself; no session may get that mode.
    for _ in range(3):
        with Session(storage.engine) as session:
            session.add(InboxEvent(source="stripe", event_id="evt_2", topic="customer.created", headers={},
                                   body=b"{}", received_at=datetime.now(timezone.utc), status="pending",
                                   attempts=0, outcome=[], origin="webhook"))
            session.flush()
            session.rollback()
    with sqlite3.connect(tmp_path / "hub-inbox.db") as other:
        assert other.execute("select event_id from inbox_event").fetchall() == [("evt_1",)]
    storage.dispose()


def test_the_migrations_build_the_tables_the_models_describe(tmp_path):
    storage = Storage("sqlite:///" + str(tmp_path / "t.db"))
    storage.upgrade()
    with storage.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    storage.dispose()
    # The inbox is in its own attached file (migration 0002), where the comparison does not look;
    # ix_delivery_due is made on PostgreSQL alone (migration 0018).
    assert [d for d in differences if "inbox_event" not in str(d) and "ix_delivery_due" not in str(d)] == []


@pytest.fixture
def silent_database_host():
    """A port that takes TCP connections and never answers, as a database host does whose
    server hangs or whose packets are dropped past the handshake."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def finishes_within(seconds: float, work) -> BaseException | None:
    """Run `work` in a thread; the exception it raised, failing the test if it still waits."""
    raised = []

    def run():
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - handed to the test to assert on
            raised.append(exc)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s"
    return raised[0] if raised else None


def test_a_postgresql_host_that_stops_answering_fails_new_connections_in_bounded_time(silent_database_host,
                                                                                      monkeypatch):
    monkeypatch.setattr(dialect, "CONNECT_TIMEOUT_S", 2)
    url = f"postgresql+psycopg://hub@127.0.0.1:{silent_database_host}/hub"
    storage = Storage(url)
    started = time.monotonic()
    # The workers' and pages' pool, and the webhook path's grouped writer (whose failure answers 503).
    assert isinstance(finishes_within(15, lambda: storage.engine.connect().close()), OperationalError)
    writer = storage.inbox_writer
    assert isinstance(finishes_within(15, lambda: asyncio.run(writer._grouped_connection())),
                      psycopg.OperationalError)
    assert time.monotonic() - started < 12
    # A timeout the URL names itself is the merchant's choice, kept.
    assert dialect.connect_limits(make_url(url + "?connect_timeout=30")) == {}


def test_postgresql_plans_the_hubs_reads_for_rows_held_in_memory_unless_told_otherwise(database_url):
    """A young table (the first days of an install) seemed cheaper to read whole than through
    its index at PostgreSQL's default page costs, for every batch of a burst."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's planner costs")
    for url, expected in ((database_url, dialect.RANDOM_PAGE_COST),
                          # a value the merchant's server, database or URL gives is theirs, kept
                          (database_url + "?options=-c%20random_page_cost%3D2", "2")):
        storage = Storage(url)
        try:
            with storage.session() as session:
                assert session.execute(sql("SHOW random_page_cost")).scalar() == expected
                session.rollback()  # the setting outlives a transaction undone
                assert session.execute(sql("SHOW random_page_cost")).scalar() == expected
        finally:
            storage.dispose()
