"""The statements whose wording differs between SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import delete, event, select, text
from sqlalchemy.exc import OperationalError

from hub.db.dialect import mark_once, one_of, plan_for_values
from hub.db.engine import Storage
from hub.models import ProfileDue

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
KEY = ("connector", "subscriber_id")


@pytest.fixture
def storage(database_url):
    storage = Storage(database_url)
    yield storage
    storage.dispose()


def test_marking_once_keeps_the_first_mark_of_each_key(storage):
    table = ProfileDue.__table__
    with storage.engine.begin() as conn:
        mark_once(conn, table, [{"connector": "hubspot", "subscriber_id": 1, "marked_at": T0}], KEY)
    with storage.engine.begin() as conn:
        mark_once(conn, table, [{"connector": "hubspot", "subscriber_id": 1, "marked_at": T0.replace(hour=13)},
                                {"connector": "hubspot", "subscriber_id": 2, "marked_at": T0.replace(hour=13)}], KEY)
        rows = conn.execute(select(table.c.subscriber_id, table.c.marked_at).order_by(table.c.subscriber_id)).all()
    assert [(i, at.hour) for i, at in rows] == [(1, 12), (2, 13)]


def test_a_row_marked_again_is_held_from_a_deleting_reader_until_the_marking_commits(storage, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite's writers take turns on the whole file: no row is ever shared")
    table = ProfileDue.__table__
    row = {"connector": "hubspot", "subscriber_id": 1, "marked_at": T0}
    with storage.engine.begin() as conn:
        mark_once(conn, table, [row], KEY)
    with storage.engine.connect() as marking, storage.engine.connect() as reader:
        marking.begin()
        mark_once(marking, table, [row], KEY)  # a drain marks the person again, not committed yet
        reader.begin()
        reader.execute(text("SET LOCAL lock_timeout = '200ms'"))
        # The planner's take of the mark waits for that drain (then reads what it wrote).
        with pytest.raises(OperationalError, match="lock timeout"):
            reader.execute(delete(table).where(table.c.subscriber_id == 1))
        reader.rollback()
        marking.commit()


def test_a_transaction_planned_for_its_values_keeps_no_generic_plan_past_its_end(storage, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite plans every statement for its values")
    with storage.session() as session:
        plan_for_values(session)
        assert session.scalar(text("SHOW plan_cache_mode")) == "force_custom_plan"
    with storage.session() as session:  # SET LOCAL: the pooled connection goes back as it was
        assert session.scalar(text("SHOW plan_cache_mode")) == "auto"


def test_one_of_finds_the_rows_named_however_many_and_says_so_in_one_short_statement(storage, database_url):
    """A batch names a few hundred people at once: on PostgreSQL the statement stays the same
    length whatever their number (one array), so the driver keeps it converted."""
    at = datetime(2026, 12, 7, tzinfo=timezone.utc)
    with storage.engine.begin() as conn:
        conn.execute(ProfileDue.__table__.insert(), [{"connector": "klaviyo", "subscriber_id": n, "marked_at": at}
                                                     for n in range(1, 701)])
    statements = []

    def seen(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(storage.engine, "before_cursor_execute", seen)
    with storage.session() as session:
        for named in ([], [5], list(range(100, 700))):
            found = session.scalars(select(ProfileDue.subscriber_id)
                                    .where(one_of(session, ProfileDue.subscriber_id, named))).all()
            assert sorted(found) == named
    event.remove(storage.engine, "before_cursor_execute", seen)
    if database_url.startswith("postgresql"):
        assert len(set(statements)) == 1 and len(statements[0]) < 300
