"""Rows written in bulk: the drain's executemany statements and its one flush of the
people a batch changed.

The unit of work writes each modified object with its own bookkeeping (attribute history,
relationship dependency checks, a parameter set built per object): for a batch of 500
people that is a fifth of the drain. `write_changed` sends the same UPDATEs, one
executemany per set of changed columns, and marks the objects clean as a flush would.
`execute_many` runs one statement for many rows with SQLAlchemy's own value conversions
but without its per-row bookkeeping, which on SQLite cost more than the driver's own work.
"""
from __future__ import annotations

from sqlalchemy import bindparam, inspect, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.base import NO_VALUE
from sqlalchemy.orm.state import InstanceState

from hub.models.base import now_utc


def write_changed(session: Session, model) -> int:
    """UPDATE the modified, persistent `model` objects of the session whose changes are
    column values only (anything else is left to the ORM's flush); how many were written."""
    mapper = inspect(model)
    table = mapper.local_table
    columns = {prop.key: prop.columns[0] for prop in mapper.column_attrs}
    onupdate = [(key, _default(column.onupdate)) for key, column in columns.items()
                if column.onupdate is not None]
    pk = mapper.primary_key[0]
    written: list[InstanceState] = []
    rows = []
    identity_map = session.identity_map
    for state in list(identity_map._modified):
        if state.class_ is not model or state.key is None or state.deleted or state.was_deleted:
            continue
        if state in session._deleted:
            continue
        committed = state.committed_state
        if any(key not in columns for key in committed):
            continue  # a relationship changed: the ORM orders that flush
        values = state.dict
        written.append(state)
        changed = [k for k, old in committed.items() if old is NO_VALUE or old != values.get(k)]
        if not changed:
            continue  # set to what it was: no UPDATE, as with the ORM
        for key, make in onupdate:
            if key not in committed:
                values[key] = make()
        row = {columns[k].key: values[k] for k in changed}
        row.update((columns[k].key, values[k]) for k, _ in onupdate if k not in committed)
        row[pk.key] = state.key[1][0]
        rows.append(row)
    update_by_key(session.connection(), table, rows, key=pk.key)
    InstanceState._commit_all_states(((s, s.dict) for s in written), identity_map)
    return len(written)


def update_by_key(connection, table, rows: list[dict], key: str = "id") -> int:
    """UPDATE each row of `table` named by `rows` (dicts of its `key` and the columns to set),
    one executemany per set of columns; how many rows matched."""
    shapes: dict[tuple, list[dict]] = {}
    for row in rows:
        shapes.setdefault(tuple(sorted(c for c in row if c != key)), []).append(row)
    matched = 0
    for columns, members in shapes.items():
        statement = (update(table).where(table.c[key] == bindparam("k_")).values(
            {table.c[c]: bindparam(f"v_{c}") for c in columns}))
        matched += execute_many(connection, statement, [{"k_": row[key], **{f"v_{c}": row[c] for c in columns}}
                                                        for row in members])
    return matched


def execute_many(connection, statement, rows: list[dict]) -> int:
    """Run an INSERT or UPDATE once per row of `rows` (dicts with the same keys) as one
    executemany; the driver's row count (-1 where it keeps none). Values are converted and
    defaults filled as SQLAlchemy does, but "now" and empty JSON defaults once per
    statement; on SQLite the driver is called directly."""
    if not rows:
        return 0
    if connection.dialect.name != "sqlite":
        return connection.execute(statement, rows).rowcount
    dialect = connection.dialect
    compiled = statement.compile(dialect=dialect, column_keys=list(rows[0]))
    if compiled.post_compile_params or compiled.literal_execute_params:  # IN lists: rendered per row
        return connection.execute(statement, rows).rowcount
    defaulted = {c.key: c for c in (*compiled.insert_prefetch, *compiled.update_prefetch)}
    # Per placeholder, where its value comes from: the row (through the column's processor),
    # a value bound once for every row (a literal of the statement, like the "queued" of
    # WHERE status = 'queued', or a default of _SAME_FOR_ALL_ROWS), or a default made per row.
    plan = []
    for name in compiled.positiontup:
        bind = compiled.binds[name]
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        bound = processor or (lambda value: value)
        if name in rows[0]:
            plan.append((_FROM_ROW, name, processor))
        elif name in defaulted:
            column = defaulted[name]
            make = _default(column.default if column in compiled.insert_prefetch else column.onupdate)
            if make.per_row:
                plan.append((_MADE, lambda make=make, bound=bound: bound(make()), None))
            else:
                plan.append((_FIXED, bound(make()), None))
        else:
            plan.append((_FIXED, bound(bind.effective_value), None))
    params = []
    for row in rows:
        values = []
        for source, what, processor in plan:
            if source is _FROM_ROW:
                value = row[what]
                values.append(value if processor is None else processor(value))
            elif source is _FIXED:
                values.append(what)
            else:
                values.append(what())
        params.append(tuple(values))
    return connection.exec_driver_sql(compiled.string, params).rowcount


_FROM_ROW, _FIXED, _MADE = "row", "fixed", "made"
# Defaults whose value may be shared by all rows of one statement: empty JSON values, and
# "now", which for one batch is one instant.
_SAME_FOR_ALL_ROWS = {dict, list, now_utc}


def _default(default):
    """A column default as a function of no arguments; `per_row` when each row needs its own."""
    if not default.is_callable:
        def make():
            return default.arg

        make.per_row = False
        return make

    def make():
        # SQLAlchemy wraps the default to take an execution context; the hub's use none.
        return default.arg(None)

    make.per_row = getattr(default.arg, "__wrapped__", None) not in _SAME_FOR_ALL_ROWS
    return make
