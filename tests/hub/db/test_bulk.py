"""write_changed: the drain's bulk UPDATE of changed people writes what the ORM's flush would."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, event, func, insert, select
from sqlalchemy.orm import Session

from hub.db import bulk
from hub.db.bulk import write_changed
from hub.db.engine import Storage
from hub.db.unit import UnitOfWork
from hub.models import Base, Checkpoint, Subscriber, Subscription

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def storage(database_url):
    storage = Storage(database_url)
    yield storage
    storage.dispose()


def people(storage, n: int, tag: str = "p") -> list[int]:
    with storage.session() as session:
        made = [Subscriber(email=f"{tag}{i}@example.com", first_seen_at=T0, updated_at=T0) for i in range(n)]
        session.add_all(made)
        session.flush()
        return [s.id for s in made]


def change(session, ids):
    """The same edits, applied to people loaded in `session`: various shapes, JSON, a no-op."""
    loaded = {s.id: s for s in session.scalars(select(Subscriber).where(Subscriber.id.in_(ids)))}
    edit(*(loaded[i] for i in ids))


def edit(a, b, c, d):
    a.first_name, a.stage, a.consent = "Ada", "engaged", {"email": {"state": "subscribed"}}
    b.first_name, b.stage = "Bo", "new"
    c.loyalty_points, c.last_activity_at = 40, T0 + timedelta(days=2)
    d.email = d.email  # set to what it was: no UPDATE, as with the ORM


def columns(storage, ids) -> list[dict]:
    with storage.engine.connect() as conn:
        rows = conn.execute(select(Subscriber.__table__).where(Subscriber.id.in_(ids))
                            .order_by(Subscriber.id)).mappings()
        return [dict(r) for r in rows]


def test_the_rows_written_are_those_the_orm_flush_writes(storage):
    by_orm, by_bulk = people(storage, 4, "orm"), people(storage, 4, "bulk")
    with storage.session() as session:
        change(session, by_orm)
    with storage.session() as session:
        change(session, by_bulk)
        assert write_changed(session, Subscriber) == 4
        assert not session.dirty  # marked clean: the commit's flush has nothing left to send

    orm_rows, bulk_rows = columns(storage, by_orm), columns(storage, by_bulk)
    for orm, written in zip(orm_rows, bulk_rows):
        assert {k: v for k, v in written.items() if k not in ("id", "email", "created_at", "updated_at")} == \
               {k: v for k, v in orm.items() if k not in ("id", "email", "created_at", "updated_at")}
    # updated_at moves with a change (onupdate), and stays for the person nothing changed for.
    assert [r["updated_at"] > T0 for r in bulk_rows] == [r["updated_at"] > T0 for r in orm_rows] \
        == [True, True, True, False]


def test_the_objects_keep_their_new_values_after_commit(storage):
    (pid,) = people(storage, 1)
    with storage.session() as session:
        person = session.get(Subscriber, pid)
        person.stage = "loyal"
        write_changed(session, Subscriber)
        session.commit()
        assert person.stage == "loyal" and person.updated_at > T0
    assert columns(storage, [pid])[0]["stage"] == "loyal"


def test_a_person_whose_collection_changed_is_left_to_the_orm(storage):
    (pid,) = people(storage, 1)
    with storage.session() as session:
        person = session.get(Subscriber, pid)
        person.stage = "new"
        person.subscriptions.append(Subscription(source="stripe", source_id="sub_1", status="active"))
        assert write_changed(session, Subscriber) == 0
        assert person in session.dirty
    with storage.session() as session:
        person = session.get(Subscriber, pid)
        assert person.stage == "new" and [s.source_id for s in person.subscriptions] == ["sub_1"]


def stored_text(storage, table: str, keys: list[str]) -> list[tuple]:
    """The values as the database holds them (SQLite: the text of each datetime and JSON)."""
    with storage.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(
            f"select {', '.join(keys)} from {table} order by id").fetchall()]


def test_execute_many_stores_what_sqlalchemy_stores(storage):
    from sqlalchemy import insert

    from hub.db.bulk import execute_many
    from hub.models import Delivery
    from hub.sync.outbox import delivery_row

    table = Delivery.__table__
    rows = [delivery_row("klaviyo", "profile", 7, f"profile:7:{kind}", {"email": "zoë@example.com", "n": 10 ** 20},
                 False) for kind in ("orm", "bulk")]
    rows[0]["next_attempt_at"] = rows[1]["next_attempt_at"] = T0  # the same values either way
    rows[0]["created_at"] = rows[1]["created_at"] = T0
    with storage.engine.begin() as conn:
        conn.execute(insert(table), [rows[0]])
        execute_many(conn, insert(table), [rows[1]])
    keys = ["connector", "kind", "subscriber_id", "payload", "status", "attempts", "next_attempt_at",
            "history", "created_at"]
    by_sqlalchemy, by_execute_many = stored_text(storage, "delivery", keys)
    assert by_execute_many == by_sqlalchemy


MANY = bulk.COPY_FROM_ROWS + 4  # enough rows for PostgreSQL's COPY path


def test_many_rows_are_stored_as_sqlalchemy_stores_them(storage):
    from hub.models import Delivery
    from hub.sync.outbox import delivery_row

    table = Delivery.__table__
    keys = ["connector", "kind", "subscriber_id", "idempotency_key", "payload", "status", "next_attempt_at",
            "created_at"]

    def rows(tag):
        made = [delivery_row("klaviyo", "profile", i, f"profile:{i}:{tag}",
                             {"email": f"zoë{i}@example.com", "n": 10 ** 20, "tab": "a\tb\nc\\d"}, False)
                for i in range(MANY)]
        for i, row in enumerate(made):
            row["next_attempt_at"] = row["created_at"] = T0 + timedelta(microseconds=i)
        return made

    with storage.engine.begin() as conn:
        conn.execute(insert(table), rows("x"))
        assert bulk.execute_many(conn, insert(table), rows("y")) == MANY
    stored = stored_text(storage, "delivery", keys)
    by_sqlalchemy, by_execute_many = stored[:MANY], stored[MANY:]
    assert [r[:3] + r[4:] for r in by_execute_many] == [r[:3] + r[4:] for r in by_sqlalchemy]
    # New ids follow the rows' order, as one INSERT per row numbers them.
    assert [r[3] for r in by_execute_many] == [f"profile:{i}:y" for i in range(MANY)]


def test_many_rows_inserted_once_skip_those_stored_and_those_repeated(storage):
    from hub.db.dialect import insert_ignore
    from hub.models import Delivery
    from hub.sync.outbox import KEY, delivery_row

    table = Delivery.__table__
    with storage.engine.begin() as conn:
        insert_ignore(conn, table, delivery_row("klaviyo", "profile", 1, "stored", {}, False), KEY)
    keys = ["stored", *(f"new{i}" for i in range(MANY)), "new0"]
    with storage.engine.begin() as conn:
        added = insert_ignore(conn, table, [delivery_row("klaviyo", "profile", 1, key, {"k": key}, False)
                                            for key in keys], KEY)
    assert added == MANY
    with storage.engine.connect() as conn:
        stored = conn.execute(select(Delivery.idempotency_key, Delivery.payload).order_by(Delivery.id)).all()
    assert stored == [("stored", {}), *((f"new{i}", {"k": f"new{i}"}) for i in range(MANY))]


def test_many_rows_inserted_once_in_autocommit_are_all_stored(storage):
    from hub.db.dialect import insert_ignore
    from hub.models import Delivery
    from hub.sync.outbox import KEY, delivery_row

    with storage.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        added = insert_ignore(conn, Delivery.__table__, [delivery_row("klaviyo", "profile", 1, f"k{i}", {}, False)
                                                         for i in range(MANY)], KEY)
    with storage.engine.connect() as conn:
        assert added == MANY == conn.execute(select(func.count()).select_from(Delivery)).scalar()


def test_many_rows_updated_by_key_each_get_their_own_values(storage):
    from hub.db.bulk import update_by_key
    from hub.models import Delivery
    from hub.sync.outbox import delivery_row

    table = Delivery.__table__
    with storage.engine.begin() as conn:
        conn.execute(insert(table), [delivery_row("hubspot", "profile", i, f"k{i}", {}, False) for i in range(MANY)])
        ids = list(conn.execute(select(Delivery.id).order_by(Delivery.id)).scalars())
    changes = [{"id": i, "status": "sent", "attempts": n, "sent_at": T0 + timedelta(seconds=n), "last_error": None}
               for n, i in enumerate(ids)]
    changes += [{"id": ids[0], "status": "dead", "last_error": f"tried {n}"} for n in range(MANY)]
    with storage.engine.begin() as conn:
        assert update_by_key(conn, table, changes) == 2 * MANY
    with storage.engine.connect() as conn:
        stored = conn.execute(select(Delivery.status, Delivery.attempts, Delivery.sent_at, Delivery.last_error)
                              .order_by(Delivery.id)).all()
    assert stored[0] == ("dead", 0, T0, f"tried {MANY - 1}")  # the same row named again: the last one stays
    assert stored[1:] == [("sent", n, T0 + timedelta(seconds=n), None) for n in range(1, MANY)]


def test_execute_many_makes_other_defaults_row_by_row(tmp_path):
    # "now" and empty JSON values are bound once per statement; any other callable default
    # (an id generator, say) still gives each row its own value.
    from itertools import count

    from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert

    from hub.db.bulk import execute_many
    from hub.models.base import UTCDateTime, now_utc

    serial = count(1)
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("name", String),
                  Column("token", String, default=lambda: f"tok-{next(serial)}"),
                  Column("at", UTCDateTime, default=now_utc))
    engine = create_engine(f"sqlite:///{tmp_path / 't.db'}")
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        assert execute_many(conn, insert(table), [{"name": "a"}, {"name": "b"}, {"name": "c"}]) == 3
        rows = conn.execute(table.select().order_by(table.c.id)).all()
    assert [r.token for r in rows] == ["tok-1", "tok-2", "tok-3"]
    assert len({r.at for r in rows}) == 1 and rows[0].at.tzinfo is not None
    engine.dispose()


# add_numbered / write_new: people created ahead for a drained batch, written once ------------

def numbered(unit, n: int, tag: str) -> list[Subscriber]:
    from hub.db.bulk import add_numbered

    return add_numbered(unit, Subscriber, [{"email": f"{tag}{i}@example.com"} for i in range(n)])


def test_numbered_people_hold_their_defaults_before_anything_is_written(storage):
    with storage.session() as session:
        unit = UnitOfWork(session)
        ada, = numbered(unit, 1, "ada")
        # What the appliers and the rules read of a new person, with no flush yet.
        assert (ada.orders_count, ada.lifetime_spend, ada.loyalty_points, ada.consent, ada.cards) == (0, 0, 0, {}, {})
        assert ada.first_seen_at is not None and ada.id is not None
        ada.consent["email"] = {"state": "subscribed"}
        other, = numbered(unit, 1, "other")
        assert other.consent == {}  # each its own dict
        assert columns(storage, [ada.id]) == []  # nothing written yet


def test_a_numbered_person_is_written_once_with_the_values_it_ends_with(storage):
    by_orm = people(storage, 4, "orm")
    with storage.session() as session:
        change(session, by_orm)
    with storage.session() as session:
        unit = UnitOfWork(session)
        made = numbered(unit, 4, "bulk")
        for person in made:
            person.first_seen_at = person.updated_at = T0
        edit(*made)
        from hub.db.bulk import write_new

        assert write_new(unit) == 4
        assert not session.new and not session.dirty  # persistent and clean: the commit sends nothing
    orm_rows, new_rows = columns(storage, by_orm), columns(storage, [p.id for p in made])
    assert len(new_rows) == 4
    for orm, new in zip(orm_rows, new_rows):
        assert {k: v for k, v in new.items() if k not in ("id", "email", "created_at", "updated_at")} == \
               {k: v for k, v in orm.items() if k not in ("id", "email", "created_at", "updated_at")}


def test_any_flush_writes_numbered_people_first(storage):
    # A subscription (written by the ORM) refers to a numbered person: the foreign key holds.
    with storage.session() as session:
        ada, = numbered(UnitOfWork(session), 1, "ada")
        session.add(Subscription(source="stripe", source_id="sub_1", status="active", subscriber=ada))
        session.flush()
        assert ada not in session.new
        ada.stage = "new"
    with storage.session() as session:
        person = session.get(Subscriber, ada.id)
        assert person.stage == "new" and [s.source_id for s in person.subscriptions] == ["sub_1"]


def test_numbered_people_of_a_rolled_back_savepoint_are_never_written(storage):
    from hub.db.bulk import write_new

    with storage.session() as session:
        unit = UnitOfWork(session)
        savepoint = session.begin_nested()
        ghost, = numbered(unit, 1, "ghost")
        savepoint.rollback()
        assert write_new(unit) == 0
        kept = Subscriber(email="kept@example.com")
        session.add(kept)
        session.flush()
    with storage.engine.connect() as conn:
        emails = conn.execute(select(Subscriber.email)).scalars().all()
    assert emails == ["kept@example.com"]


def test_numbers_taken_ahead_are_never_given_to_another_row(storage):
    from hub.db.bulk import write_new

    with storage.session() as session:
        unit = UnitOfWork(session)
        ahead = numbered(unit, 3, "ahead")
        write_new(unit)
        later = Subscriber(email="later@example.com")  # numbered by the database
        session.add(later)
        session.flush()
        again = numbered(unit, 2, "again")
        write_new(unit)
    ids = [p.id for p in ahead] + [later.id] + [p.id for p in again]
    assert len(set(ids)) == 6 and ids == sorted(ids)


def test_numbers_ahead_take_one_round_trip_per_batch_on_postgresql(storage):
    if not storage.url.startswith("postgresql"):
        pytest.skip("SQLite numbers past the largest key, under the write lock it takes first")
    # A drain numbers its batch's new people ahead once per batch, before writing them.
    statements = []
    event.listen(storage.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with storage.engine.begin() as conn:
        ids = bulk.reserve_ids(conn, Subscriber.__table__, 3)
    assert len(set(ids)) == 3 and len(statements) == 1


def test_only_the_hubs_own_sessions_run_its_flush_code(storage, monkeypatch):
    # Another library's session in the same process (an admin tool, a migration) flushes
    # as plain SQLAlchemy does: the hub's bulk writer is not called for it.
    flushed = []
    monkeypatch.setattr(bulk, "write_new", flushed.append)
    other = create_engine("sqlite://")
    Base.metadata.create_all(other)
    with Session(other) as session:
        session.add(Checkpoint(name="theirs", value={}))
        session.flush()
    assert flushed == []
    with storage.session() as session:
        unit = UnitOfWork(session)
        unit.expose()
        session.add(Checkpoint(name="ours", value={}))
        session.flush()
    assert flushed == [unit]
    other.dispose()
