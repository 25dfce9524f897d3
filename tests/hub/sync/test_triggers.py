"""Exactly once: the database keeps one trigger per (subscriber, rule, occasion)."""
import threading
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from hub.db.engine import Storage
from hub.models import Base, Trigger
from hub.sync.rules.state import Due
from hub.sync.triggers import TriggerKey, insert_unique, insert_unique_bulk, trigger_row
from tests.postgres import postgres_url

NOW = datetime(2026, 11, 24, 6, 0, tzinfo=timezone.utc)


@pytest.fixture
def storage(tmp_path):
    # HUB_TEST_POSTGRES_URL runs the same tests on PostgreSQL (the database is emptied).
    storage = Storage(postgres_url() or "sqlite:///" + str(tmp_path / "t.db"))
    Base.metadata.drop_all(storage.engine)
    Base.metadata.create_all(storage.engine)
    yield storage
    storage.dispose()


def due(occasion="2026-12-01/stripe:sub_1", rule="renewal-7d", status="fired"):
    return Due(rule=rule, occasion=occasion, name="Renewal Reminder", properties={"days_before": 7},
               reason="renews in 7 days", due_at=NOW, status=status)


def count(storage) -> int:
    with storage.session() as session:
        return session.scalar(select(func.count()).select_from(Trigger))


def test_key_validates():
    assert str(TriggerKey(42, "renewal-7d", "2026-12-01")) == "42:renewal-7d:2026-12-01"
    for bad in [(0, "r", "o"), (1, "", "o"), (1, "r", "x" * 121), ("1", "r", "o")]:
        with pytest.raises(ValueError):
            TriggerKey(*bad)


def test_due_validates():
    with pytest.raises(ValueError, match="unknown trigger name"):
        Due("r", "o", "Renewal Remind", {}, "", NOW)
    with pytest.raises(ValueError, match="UTC-aware"):
        Due("r", "o", "Win Back", {}, "", NOW.replace(tzinfo=None))


def test_second_insert_returns_nothing(storage):
    with storage.session() as session:
        first = insert_unique(session, [trigger_row(1, due(), inbox_event_id=7)])
        assert [(t.subscriber_id, t.rule, t.occasion, t.inbox_event_id) for t in first] == [
            (1, "renewal-7d", "2026-12-01/stripe:sub_1", 7)]
    with storage.session() as session:
        assert insert_unique(session, [trigger_row(1, due())]) == []
        assert len(insert_unique(session, [trigger_row(2, due()), trigger_row(1, due("2026-12-02"))])) == 2
    assert count(storage) == 3


def test_bulk_returns_only_the_new_rows(storage):
    rows = [trigger_row(i, due()) for i in range(1, 5001)]
    with storage.session() as session:
        assert len(insert_unique_bulk(session, rows[:3000])) == 3000
    with storage.session() as session:
        new = insert_unique_bulk(session, rows)
        assert [r[1] for r in new] == list(range(3001, 5001))
        assert insert_unique_bulk(session, rows) == []
    assert count(storage) == 5000


def test_duplicates_inside_one_batch_store_one(storage):
    with storage.session() as session:
        assert len(insert_unique(session, [trigger_row(1, due()), trigger_row(1, due())])) == 1


def test_two_workers_racing_store_one_and_only_one_gets_it(storage):
    """Worker A inserts and holds its transaction open; B's insert waits, then does nothing."""
    a_inserted, b_done = threading.Event(), threading.Event()
    results = {}

    def worker(name, go_first):
        with storage.session() as session:
            if not go_first:
                a_inserted.wait(5)
            results[name] = insert_unique(session, [trigger_row(1, due())])
            if go_first:
                a_inserted.set()
                b_done.wait(0.5)   # B is blocked on the write lock while A is open

    threads = [threading.Thread(target=worker, args=("a", True)),
               threading.Thread(target=worker, args=("b", False))]
    for t in threads:
        t.start()
    threads[1].join(0.3)
    b_done.set()
    for t in threads:
        t.join(10)
    assert len(results["a"]) == 1 and results["b"] == []
    assert count(storage) == 1


def test_many_threads_many_keys(storage):
    keys = [trigger_row(1 + i % 50, due(f"2026-12-{1 + i % 3:02d}")) for i in range(600)]
    got = []

    def worker(part):
        with storage.session() as session:
            got.extend(insert_unique_bulk(session, part))

    threads = [threading.Thread(target=worker, args=(keys[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == count(storage) == 150
    assert len({(r[1], r[2], r[3]) for r in got}) == 150


def test_cancelled_and_skipped_rows_hold_the_key(storage):
    with storage.session() as session:
        insert_unique(session, [trigger_row(1, due(status="cancelled")), trigger_row(2, due(), status="skipped")])
    with storage.session() as session:
        assert insert_unique(session, [trigger_row(1, due()), trigger_row(2, due())]) == []
