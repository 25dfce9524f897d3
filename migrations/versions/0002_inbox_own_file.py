"""SQLite: the inbox moves to a database file of its own

Revision ID: 0002
Revises: 0001

On SQLite one writer holds a file at a time: with the inbox in the same file as the model, a
worker's drain transaction shut every webhook out of the write lock for its whole length.
hub.storage attaches `<name>-inbox.db` as schema "inbox" to every connection; this moves the
table (with its rows and indexes) there. Unqualified names still find it: SQLite looks in
main first, then in attached files. PostgreSQL and in-memory SQLite are left as they are.
"""
import re

from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

TABLE = "inbox_event"


def _schemas(bind) -> set[str]:
    return {row[1] for row in bind.exec_driver_sql("PRAGMA database_list")}


def _definitions(bind, schema: str) -> list[tuple[str, str]]:
    return [tuple(r) for r in bind.exec_driver_sql(
        f"SELECT type, sql FROM {schema}.sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL "
        "ORDER BY type DESC", (TABLE,))]  # the table before its indexes


def _move(bind, source: str, target: str) -> None:
    definitions = _definitions(bind, source)
    if not definitions:
        return
    if not _definitions(bind, target):
        for kind, sql in definitions:
            if kind == "table":
                sql = re.sub(r'^CREATE TABLE "?%s"?' % TABLE, f"CREATE TABLE {target}.{TABLE}", sql)
            else:
                sql = re.sub(r'^CREATE (UNIQUE )?INDEX "?(\w+)"?', rf"CREATE \1INDEX {target}.\2", sql)
            bind.exec_driver_sql(sql)
    bind.exec_driver_sql(f"INSERT OR IGNORE INTO {target}.{TABLE} SELECT * FROM {source}.{TABLE}")
    bind.exec_driver_sql(f"DROP TABLE {source}.{TABLE}")


def upgrade():
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and "inbox" in _schemas(bind):
        _move(bind, "main", "inbox")


def downgrade():
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and "inbox" in _schemas(bind):
        _move(bind, "inbox", "main")
