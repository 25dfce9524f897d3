"""Statements and expressions that SQLite and PostgreSQL spell differently, as plain
functions of a Session, Connection or Engine (`bind`): callers name what they need, never
the database they run on."""
from __future__ import annotations

from functools import lru_cache

from sqlalchemy import Text, any_, bindparam, cast, event, func, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY

from hub.db.bulk import execute_many

_INSERT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
# Seconds a new PostgreSQL connection may take. libpq waits without limit by default, so a
# database host that stopped answering (dropped packets, not a refusal) would hold a webhook,
# or a worker, until the operating system gives up on TCP, minutes later.
CONNECT_TIMEOUT_S = 10


def dialect_name(bind) -> str:
    """"sqlite" or "postgresql", of a Session, Connection or Engine."""
    dialect = getattr(bind, "dialect", None)
    if dialect is None:  # a Session: the dialect of the engine it is bound to
        dialect = bind.get_bind().dialect
    return dialect.name


def connect_limits(url) -> dict:
    """The driver's connect arguments that bound a new PostgreSQL connection's wait (none for
    SQLite); a `connect_timeout` the URL names itself is kept."""
    if url.get_backend_name() != "postgresql" or "connect_timeout" in url.query:
        return {}
    return {"connect_timeout": CONNECT_TIMEOUT_S}


# PostgreSQL's planner prices a page read out of order at 4 sequential ones by default, a
# figure for spinning disks with little caching. The hub reads its queues and recent rows
# from memory or SSD: at 4, a young table (the first days of an install, or a benchmark)
# was read whole for a few hundred ids where its indexes answer at once. PostgreSQL's own
# guidance for SSDs is 1.1 (https://www.postgresql.org/docs/15/runtime-config-query.html
# #GUC-RANDOM-PAGE-COST). A value the server or its database was given is kept.
RANDOM_PAGE_COST = "1.1"
_DEFAULT_RANDOM_PAGE_COST = 4.0


def plan_for_cached_rows(engine) -> None:
    """Each new PostgreSQL connection of `engine` prices random page reads at RANDOM_PAGE_COST,
    unless the server's setting is other than PostgreSQL's default (a DBA's choice, kept)."""

    @event.listens_for(engine, "connect")
    def _set_page_cost(dbapi_connection, record):
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT set_config('random_page_cost', %s, false) "
                           "WHERE current_setting('random_page_cost')::float8 = %s",
                           (RANDOM_PAGE_COST, _DEFAULT_RANDOM_PAGE_COST))
        dbapi_connection.commit()  # a session setting made in a transaction rolled back is undone


def one_of(bind, column, values):
    """`column IN values`, for a list of a few hundred ids or keys (a batch's chunk).

    On PostgreSQL one array parameter, `column = ANY(%s::type[])`: the statement's
    text stays short and the same however many values it takes, so psycopg converts it once
    and keeps it, where an IN list of 500 parameters was expanded by SQLAlchemy and parsed
    anew by the driver at every execution (past the length psycopg's statement cache keeps).
    SQLite binds an IN list's parameters cheaply: it keeps one."""
    values = list(values)
    if dialect_name(bind) != "postgresql":
        return column.in_(values)
    return column == any_(bindparam(None, values, type_=ARRAY(column.type)))


def insert_ignore(bind, table, rows, key: tuple[str, ...], returning=None):
    """INSERT `rows` (a dict, or a list of dicts run as one executemany) into `table` (a
    Table or a mapped class), skipping each row whose `key` columns (a unique constraint)
    match one stored already: INSERT … ON CONFLICT (key) DO NOTHING.

    Without `returning`: how many rows were new (the driver's row count; a list goes through
    hub.db.bulk.execute_many, without SQLAlchemy's per-row work). With it (column names, or
    the mapped class for its objects): the Result of the inserted rows only."""
    if returning is not None:
        statement = insert_ignore_statement(dialect_name(bind), table, tuple(key),
                                            tuple(returning) if isinstance(returning, list) else returning)
        return bind.execute(statement, rows)
    # A Core statement even for a mapped class: a Session then answers with the row count.
    statement = insert_ignore_statement(dialect_name(bind), getattr(table, "__table__", table), tuple(key))
    if isinstance(rows, dict):
        return bind.execute(statement, rows).rowcount
    connection = bind.connection() if hasattr(bind, "get_bind") else bind
    return execute_many(connection, statement, rows)


@lru_cache(maxsize=None)
def insert_ignore_statement(dialect: str, table, key: tuple[str, ...], returning=None):
    """The statement of insert_ignore, built once per dialect, table, key and returning."""
    statement = _INSERT[dialect](table).on_conflict_do_nothing(index_elements=list(key))
    if returning is None:
        return statement
    if isinstance(returning, tuple):
        columns = getattr(table, "__table__", table).c
        return statement.returning(*(columns[name] for name in returning))
    return statement.returning(returning)


def upsert(bind, table, row: dict, key: tuple[str, ...], changes: dict):
    """INSERT `row`, or where its `key` columns match a stored row, UPDATE that row with
    `changes`: INSERT … ON CONFLICT (key) DO UPDATE."""
    statement = _INSERT[dialect_name(bind)](table).values(**row)
    return bind.execute(statement.on_conflict_do_update(index_elements=list(key), set_=changes))


def mark_once(bind, table, rows: list[dict], key: tuple[str, ...]) -> None:
    """INSERT `rows`, leaving a stored row with the same `key` as it is, but locked until
    this transaction ends: INSERT … ON CONFLICT (key) DO UPDATE SET key = key. DO NOTHING
    would not lock it, and a reader that deletes the row meanwhile (hub.sync.outbox
    plan_due_profiles) must wait for this transaction, then see what it wrote."""
    if rows:
        bind.execute(_mark_once_statement(dialect_name(bind), table, tuple(key)), rows)


@lru_cache(maxsize=None)
def _mark_once_statement(dialect: str, table, key: tuple[str, ...]):
    statement = _INSERT[dialect](table)
    return statement.on_conflict_do_update(index_elements=list(key),
                                           set_={key[0]: statement.excluded[key[0]]})


def locks_claimed_rows(bind) -> bool:
    """Whether workers claim rows with SELECT … FOR UPDATE SKIP LOCKED (PostgreSQL). SQLite
    has no row locks: its writers take turns on the file (Storage.drain_lock, write_turn)."""
    return dialect_name(bind) == "postgresql"


def plan_for_values(session) -> None:
    """PostgreSQL: plan each statement of this transaction for the values it runs with
    (SET LOCAL plan_cache_mode = force_custom_plan); no-op on SQLite.

    For the drain's transactions, whose identity lookups name a batch's people in one array
    (one_of): every batch repeats the same statement text, psycopg prepares it after five
    runs, and PostgreSQL may then keep a generic plan made while the table was small, a
    sequential scan testing every row against each of 500 names, where a plan for the values
    hashes the list or takes the index (RESULTS.md, "Drained batches planned for their values"). The
    web path's one INSERT and the push keep their prepared plans: re-planning each of a
    statement's executions cost the push more than it saved."""
    if dialect_name(session) == "postgresql":
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


def blob_text(bind, column):
    """A binary column as text for LIKE: SQLite's LIKE does not match inside a BLOB and
    PostgreSQL's bytea has no LIKE; encode(…, 'escape') keeps printable ASCII as it is."""
    if dialect_name(bind) == "postgresql":
        return func.encode(column, "escape")
    return cast(column, Text)


def utc_day(bind, column):
    """A time column's UTC day as text, "YYYY-MM-DD"."""
    return _utc_format(bind, column, "YYYY-MM-DD", "%Y-%m-%d")


def utc_month(bind, column):
    """A time column's UTC month as text, "YYYY-MM"."""
    return _utc_format(bind, column, "YYYY-MM", "%Y-%m")


def _utc_format(bind, column, postgresql_format: str, sqlite_format: str):
    if dialect_name(bind) == "postgresql":
        return func.to_char(func.timezone("UTC", column), postgresql_format)
    return func.strftime(sqlite_format, column)


# A card of a JSON column of cards expiring in a month, tested inside the JSON.
_CARD_MONTH = {
    "sqlite": ("EXISTS (SELECT 1 FROM json_each({column}) AS c WHERE "
               "CAST(json_extract(c.value, '$.exp_month') AS INTEGER) = :m{i} AND "
               "CAST(json_extract(c.value, '$.exp_year') AS INTEGER) % 100 = :y{i})"),
    "postgresql": ("EXISTS (SELECT 1 FROM json_each({column}) AS c WHERE "
                   "CASE WHEN c.value->>'exp_month' ~ '^[0-9]{{1,2}}$' THEN (c.value->>'exp_month')::int END = :m{i} "
                   "AND CASE WHEN c.value->>'exp_year' ~ '^[0-9]{{2,4}}$' "
                   "THEN (c.value->>'exp_year')::int % 100 END = :y{i})"),
}


def card_expiring_in(bind, column: str, months: list[tuple[int, int]]):
    """A condition: the JSON object of cards in `column` ("table.column") holds one whose
    exp_month and exp_year (two or four digits) fall in one of the (year, month)s; None
    where the database has no JSON functions for it (the caller then tests the cards)."""
    exact = _CARD_MONTH.get(dialect_name(bind))
    if exact is None:
        return None
    binds = {}
    for i, (year, month) in enumerate(months):
        binds.update({f"m{i}": month, f"y{i}": year % 100})
    return (text("(" + " OR ".join(exact.replace("{column}", column).format(i=i) for i in range(len(months))) + ")")
            .bindparams(**binds))
