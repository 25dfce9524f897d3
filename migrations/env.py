"""Alembic environment: the engine comes from the hub (hub.storage.upgrade) or DATABASE_URL."""
from alembic import context

from hub.config import Settings
from hub.db.engine import make_engine
from hub.models import Base

config = context.config


def run_migrations_online():
    engine = config.attributes.get("engine")
    if engine is None:
        engine = make_engine(Settings.from_env().DATABASE_URL)
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        context.run_migrations()


run_migrations_online()
