"""Storage: the only package that knows SQLite from PostgreSQL or reaches into SQLAlchemy.

- engine: the engine and the hub's sessionmaker (Storage), SQLite's pragmas and its inbox
  file, the OS file locks that take the place of row locks on SQLite, migrations;
- dialect: statements and expressions each database spells its own way (insert_ignore,
  upsert, locks_claimed_rows, blob_text, utc_day/utc_month, card_expiring_in);
- bulk: the drain's writes without the ORM's per-object work (add_numbered/write_new,
  write_changed, update_by_key, execute_many, insert_ignore_returning for sweeps);
- unit: UnitOfWork, one transaction's work in progress, passed from step to step (the
  bulk writer's numbers and unwritten objects, the sync's identity index and outbox marks);
- inbox: the webhook path's grouped INSERT on a driver connection (InboxWriter);
- types: UTCDateTime, the time column type of every model.

JSON columns go through hub.values' codec (json_text, json_value), set on the engine.
Models keep their declarative per-dialect schema options (partial indexes with
sqlite_where/postgresql_where, BigInteger().with_variant(Integer, "sqlite")): they are
schema, read by SQLAlchemy and Alembic, not code paths that branch on the database.
"""
