"""Engine and sessions: ``request.dbsession`` joins pyramid_tm's transaction."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import transaction
import zope.sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

DBBIND_KEY = "prefcenter.dbbind"


def make_engine(url: str, *, foreign_keys: bool = True, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and serialized writes.

    Migrations turn SQLite's foreign keys off: batch migrations rebuild tables, which
    would otherwise cascade or fail on existing rows.
    """
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return sa.create_engine(url, **kwargs)

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
    engine = sa.create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself so SAVEPOINT and transactional DDL work.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # IMMEDIATE takes the write lock up front: concurrent writers (web threads,
        # the in-process worker) queue instead of failing, and reservations are serialized.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_session_factory(bind: Engine | Connection) -> sessionmaker[Session]:
    if isinstance(bind, Connection):
        # Tests bind to a connection inside an outer transaction; commits become savepoints.
        return sessionmaker(bind=bind, join_transaction_mode="create_savepoint")
    return sessionmaker(bind=bind)


def get_tm_session(
    session_factory: sessionmaker[Session],
    transaction_manager: transaction.TransactionManager,
    request: Any = None,
) -> Session:
    """A session whose commit/abort is driven by a zope transaction manager."""
    dbsession = session_factory(info={"request": request})
    zope.sqlalchemy.register(dbsession, transaction_manager=transaction_manager)
    return dbsession


@contextlib.contextmanager
def task_session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction for one unit of work outside a request (tasks, CLI)."""
    manager = transaction.TransactionManager(explicit=True)
    with manager:
        yield get_tm_session(session_factory, manager)


def includeme(config: Any) -> None:
    settings = config.get_settings()
    settings["tm.manager_hook"] = "pyramid_tm.explicit_manager"
    config.include("pyramid_tm")

    bind = settings.get(DBBIND_KEY) or make_engine(settings["sqlalchemy.url"])
    session_factory = make_session_factory(bind)
    config.registry["dbbind"] = bind
    config.registry["dbsession_factory"] = session_factory

    def dbsession(request: Any) -> Session:
        # A test may hand in its own session through the WSGI environ.
        existing = request.environ.get("app.dbsession")
        if existing is not None:
            return existing
        return get_tm_session(session_factory, request.tm, request)

    config.add_request_method(dbsession, reify=True)
