"""Alembic environment: the database URL comes from the app's ini (or DATABASE_URL)."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from pyramid.paster import get_appsettings

import campaigns.models  # noqa: F401  (the campaign engine's tables share prefcenter's Base)
from prefcenter.db import make_engine
from prefcenter.models import Base
from prefcenter.settings import database_url

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    if "url" in config.attributes:
        return config.attributes["url"]
    return database_url(get_appsettings(config.config_file_name, name="main"))


def _configure(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return

    if config.config_file_name and config.attributes.get("configure_logging", True):
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    engine = make_engine(_url(), foreign_keys=False)
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
