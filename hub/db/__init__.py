"""Storage: engine and sessions, bulk writes, the inbox writer; the only package that knows SQLite from PostgreSQL."""
