"""Engine and sessions: ``request.dbsession`` joins pyramid_tm's transaction."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pyramid.request
import pyramid_tm
import sqlalchemy as sa
import transaction
import zope.sqlalchemy
import zope.sqlalchemy.datamanager
from pyramid.decorator import reify
from pyramid.tweens import EXCVIEW
from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.expression import ClauseElement, Executable
from transaction._transaction import Status as ZopeStatus
from zope.sqlalchemy.datamanager import ZopeTransactionEvents

DBBIND_KEY = "prefcenter.dbbind"


def make_engine(url: str, *, foreign_keys: bool = True, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and serialized writes.

    Migrations turn SQLite's foreign keys off: batch migrations rebuild tables, which
    would otherwise cascade or fail on existing rows.
    """
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "postgresql":
        # Sessions in UTC whatever the server's zone: SQL on instants (date_trunc, ::date)
        # means the same everywhere, and the driver hands back instants in
        # datetime.UTC itself, which UTCDateTime passes through (converting from the
        # zoneinfo "Etc/UTC" cost a few microseconds per value read).
        connect_args = dict(kwargs.pop("connect_args", {}))
        options = connect_args.get("options", "")
        connect_args["options"] = f"{options} -c TimeZone=UTC".strip()
        kwargs["connect_args"] = connect_args
    if parsed.get_backend_name() != "sqlite":
        ping_idle = kwargs.pop("ping_idle_after", PING_IDLE_AFTER)
        engine = sa.create_engine(url, **kwargs)
        if ping_idle is not None and not kwargs.get("pool_pre_ping"):
            _ping_when_idle(engine, ping_idle)
        return engine

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


TM_KEY = "transaction_manager"


def _manager(session: Session) -> transaction.TransactionManager | None:
    """The zope transaction manager the session was made for (get_tm_session), if any."""
    return session.info.get(TM_KEY)


class _SessionsOwnManager(ZopeTransactionEvents):
    """zope.sqlalchemy's listeners, registered once per session factory.

    ``zope.sqlalchemy.register(session, transaction_manager=...)`` adds seven event
    listeners to every new session, about 0.3 ms a request (a sixth of a simple API
    read). Registered on the factory instead, the listeners find each session's own
    transaction manager in ``session.info``; a session made without one (a test's plain
    ``factory()``) is left alone.
    """

    def after_begin(self, session: Session, transaction_: Any, connection: Any) -> None:
        self._join(session)

    def after_attach(self, session: Session, instance: Any) -> None:
        self._join(session)

    def after_flush(self, session: Session, flush_context: Any) -> None:
        mark_changed(session)

    def after_bulk_update(self, update_context: Any) -> None:
        mark_changed(update_context.session)

    def after_bulk_delete(self, delete_context: Any) -> None:
        mark_changed(delete_context.session)

    def before_commit(self, session: Session) -> None:
        manager = _manager(session)
        if manager is None or session.in_nested_transaction():
            return
        assert manager.get().status == ZopeStatus.COMMITTING, (
            "Transaction must be committed using the transaction manager"
        )

    def do_orm_execute(self, execute_state: Any) -> None:
        if execute_state.is_orm_statement and (
            execute_state.is_update or execute_state.is_insert or execute_state.is_delete
        ):
            mark_changed(execute_state.session)

    def _join(self, session: Session) -> None:
        manager = _manager(session)
        if manager is not None:
            zope.sqlalchemy.datamanager.join_transaction(
                session, self.initial_state, manager, self.keep_session
            )


_LISTENERS = _SessionsOwnManager()
_EVENTS = (
    "after_begin",
    "after_attach",
    "after_flush",
    "after_bulk_update",
    "after_bulk_delete",
    "before_commit",
    "do_orm_execute",
)


def mark_changed(session: Session) -> None:
    """Tell the session's transaction manager it wrote (Core statements on its connection)."""
    manager = _manager(session)
    if manager is not None:
        zope.sqlalchemy.mark_changed(session, transaction_manager=manager)


# A pooled connection idle for longer than this is pinged before use (a database restart
# or a firewall may have closed it meanwhile); one in steady use is not. ``pool_pre_ping``
# would ping at every checkout: three round trips (BEGIN, SELECT 1, ROLLBACK) added to
# each API request, which is one query.
PING_IDLE_AFTER = 10.0


def _ping_when_idle(engine: Engine, seconds: float) -> None:
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("checked_in_at")
        if idle_since is None or time.monotonic() - idle_since < seconds:
            return  # new, or in steady use
        try:
            dbapi_connection.execute("SELECT 1")
            dbapi_connection.rollback()
        except Exception as exc:
            # The pool discards this connection and checks out another (SQLAlchemy's
            # documented pessimistic disconnect handling).
            raise sa.exc.DisconnectionError(f"stale pooled connection: {exc}") from exc


def make_session_factory(bind: Engine | Connection) -> sessionmaker[Session]:
    if isinstance(bind, Connection):
        # Tests bind to a connection inside an outer transaction; commits become savepoints.
        factory = sessionmaker(bind=bind, join_transaction_mode="create_savepoint")
    else:
        factory = sessionmaker(bind=bind)
    for name in _EVENTS:
        event.listen(factory, name, getattr(_LISTENERS, name))
    return factory


def get_tm_session(
    session_factory: sessionmaker[Session],
    transaction_manager: transaction.TransactionManager,
    request: Any = None,
) -> Session:
    """A session whose commit/abort is driven by a zope transaction manager."""
    return session_factory(info={"request": request, TM_KEY: transaction_manager})


class _CreateTableAs(Executable, ClauseElement):
    inherit_cache = False

    def __init__(self, name: str, query: sa.Select, prefix: str) -> None:
        self.name, self.query, self.prefix = name, query, prefix


@compiles(_CreateTableAs)
def _compile_create_table_as(element: _CreateTableAs, compiler: Any, **kw: Any) -> str:
    query = compiler.process(element.query, **kw)
    return f"CREATE {element.prefix} TABLE {element.name} AS {query}"


@contextlib.contextmanager
def staged(session: Session, query: sa.Select) -> Iterator[sa.TableClause]:
    """``query``'s rows as a table for the rest of the block, computed once.

    PostgreSQL 15 never runs an ``INSERT … SELECT`` with parallel workers, but it does a
    ``CREATE TABLE … AS SELECT``: the set-based policy's decisions for a million
    customers are staged this way and then read several times (the planner). The table
    is UNLOGGED (no WAL, in shared buffers: a temporary table lives in ``temp_buffers``,
    8 MB, and spilled at 1M rows) and dropped at the end; if the transaction fails,
    rolling it back removes the table too. On SQLite it is a temporary table.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    name = f"staged_{uuid.uuid4().hex[:12]}"
    session.execute(_CreateTableAs(name, query, "UNLOGGED" if postgres else "TEMPORARY"))
    yield sa.table(name, *(sa.column(c.key, c.type) for c in query.selected_columns))
    session.execute(sa.text(f"DROP TABLE {name}"))


def recordset(rows: list[dict[str, Any]], *columns: sa.ColumnClause) -> Any:
    """PostgreSQL: a whole batch of rows as one JSON parameter, read back as typed rows.

    One statement and one short SQL text whatever the batch size (a 1,000-row VALUES
    list costs more to build and parse, by the driver and by PostgreSQL, than the work
    it describes, and a new text each time is never a prepared statement).
    """
    text = json.dumps(rows, default=str, separators=(",", ":"))
    batch = sa.cast(sa.bindparam("batch", text), postgresql.JSONB)
    return (
        sa.func.jsonb_to_recordset(batch)
        .table_valued(*columns)
        .render_derived(name="batch", with_types=True)
    )


def typed_recordset(table: sa.Table, rows: list[dict[str, Any]]) -> Any:
    """:func:`recordset` with the columns typed as the table's own."""
    return recordset(rows, *(sa.column(n, table.c[n].type) for n in rows[0]))


def set_local(session: Session, settings: Mapping[str, str]) -> dict[str, str | None]:
    """Give PostgreSQL these settings until the transaction ends (``SET LOCAL``), in one
    statement; returns their values before, for :func:`set_local` to put back (None for
    a custom setting, such as ``prefcenter.…``, never set in this session).

    The old values are read in a materialized CTE, which the outer query reads before
    it evaluates the ``set_config`` calls: the order does not rest on the order of the
    expressions in one select list.
    """
    names = list(settings)
    old = (
        sa.select(*(sa.func.current_setting(n, True).label(f"s{i}") for i, n in enumerate(names)))
        .cte("old")
        .prefix_with("MATERIALIZED")
    )
    row = session.execute(
        sa.select(*old.c, *(sa.func.set_config(n, settings[n], True) for n in names)).select_from(
            old
        )
    ).one()
    return dict(zip(names, row[: len(names)], strict=True))


def read_without_transaction(session: Session) -> None:
    """Run this session's statements outside a transaction (PostgreSQL autocommit): a
    request that only reads, in one statement, then costs that one round trip instead
    of three (BEGIN, the query, ROLLBACK). A write would be committed at once, so only
    for views that write nothing; call it before the session's first statement. The
    connection goes back to the pool in its usual mode. Nothing changes for a session
    bound to a connection (tests) or on SQLite.
    """
    bind = session.get_bind()
    if isinstance(bind, Engine) and bind.dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


def array_literal(ids: Iterable[Any], element_type: Any) -> sa.ColumnElement[Any]:
    """PostgreSQL: these ids as one array parameter, sent as a single text literal and
    cast to ``element_type[]`` there (the driver's per-element conversion of a list of
    UUIDs costs more than the rest of a statement)."""
    literal = "{" + ",".join(map(str, ids)) + "}"
    return sa.cast(sa.bindparam(None, literal, type_=sa.Text), postgresql.ARRAY(element_type))


def lock_in_order(session: Session, column: Any, ids: Iterable[str]) -> None:
    """Lock these rows (PostgreSQL: ``FOR NO KEY UPDATE``) in the order of their ids.

    Two transactions that go on to update overlapping sets of rows then wait for one
    another instead of deadlocking. Elsewhere nothing: SQLite serializes writers.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    ordered = sorted(set(ids))
    if not ordered:
        return
    session.connection().execute(
        sa.select(column)
        .where(column == sa.any_(array_literal(ordered, column.type)))
        .order_by(column)
        .with_for_update(key_share=True)
    )


class DriverQuery:
    """A PostgreSQL query compiled once and run by the driver itself (psycopg) on the
    session's connection, for the hottest one-row reads.

    SQLAlchemy's execution of a compiled statement (its execution context, the result
    and the row processing) took about a fifth of the CPU of an API read of one JSON
    document; psycopg alone does the same work in a few microseconds. The statement
    is still written with SQLAlchemy; only its execution is the driver's. It runs
    inside whatever transaction the session's connection is in (none for a
    :func:`single_read`).
    """

    def __init__(self, query: sa.Select[Any]) -> None:
        from sqlalchemy.dialects.postgresql import psycopg

        compiled = query.compile(dialect=psycopg.dialect())
        self.sql = str(compiled)
        self.constants = dict(compiled.params)

    def scalar(self, session: Session, **params: Any) -> Any:
        """The first column of the first row (None: no row)."""
        driver = session.connection().connection.driver_connection
        row = driver.execute(self.sql, {**self.constants, **params}).fetchone()
        return None if row is None else row[0]


_TRANSIENT = frozenset(("40001", "40P01"))  # serialization failure, deadlock detected


def is_transient(error: BaseException) -> bool:
    """A deadlock or serialization failure: the transaction may simply be run again."""
    return getattr(getattr(error, "orig", None), "sqlstate", None) in _TRANSIENT


def make_read_session_factory(bind: Engine | Connection) -> sessionmaker[Session]:
    """Sessions for :func:`single_read`. On PostgreSQL they are bound to an engine of
    their own whose pooled connections are in autocommit from the start: switching a
    pooled connection to autocommit at checkout and back at checkin (what
    :func:`read_without_transaction` does) cost about 40 µs of a 500 µs read, and an
    autocommit connection needs no reset when it goes back to the pool. Elsewhere
    (SQLite, a test's connection) the usual factory."""
    if isinstance(bind, Engine) and bind.dialect.name == "postgresql":
        engine = make_engine(
            bind.url.render_as_string(hide_password=False),
            isolation_level="AUTOCOMMIT",
            pool_reset_on_return=None,
        )
        return sessionmaker(bind=engine)
    return make_session_factory(bind)


@contextlib.contextmanager
def single_read(request: Any) -> Iterator[Session]:
    """A session for a request that reads in one statement and writes nothing.

    Outside the request's transaction (the two-phase commit of a transaction manager
    with nothing to commit cost a tenth of such a request) and, on PostgreSQL, in
    autocommit (no ``BEGIN`` / ``ROLLBACK`` round trips: :func:`make_read_session_factory`);
    closed when the block ends. A test's own session (handed in through the WSGI
    environ) is used as it is.
    """
    if request.environ.get("app.dbsession") is not None:
        session = request.dbsession
        read_without_transaction(session)
        yield session
        return
    session = request.registry["read_session_factory"]()
    try:
        yield session
    finally:
        session.close()


@contextlib.contextmanager
def task_session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction for one unit of work outside a request (tasks, CLI)."""
    manager = transaction.TransactionManager(explicit=True)
    with manager:
        yield get_tm_session(session_factory, manager)


class Request(pyramid.request.Request):
    """Pyramid's request with ``tm`` and ``dbsession`` on the class.

    Added with ``config.add_request_method`` (as pyramid_tm's ``includeme`` adds ``tm``)
    they were attached anew to every request, for which Pyramid builds a class per
    request: about 14 µs of an API read of 400 µs.
    """

    @reify
    def tm(self) -> transaction.TransactionManager:
        """The request's transaction manager (pyramid_tm's, explicit)."""
        return pyramid_tm.create_tm(self)

    @reify
    def dbsession(self) -> Session:
        """A session joined to the request's transaction manager. A test may hand in its
        own session through the WSGI environ."""
        existing = self.environ.get("app.dbsession")
        if existing is not None:
            return existing
        return get_tm_session(self.registry["dbsession_factory"], self.tm, self)


def includeme(config: Any) -> None:
    settings = config.get_settings()
    # What pyramid_tm's includeme does, but ``tm``, which it adds per request, is on the
    # request class (Request above).
    settings["tm.manager_hook"] = pyramid_tm.explicit_manager
    config.add_tween("pyramid_tm.tm_tween_factory", over=EXCVIEW)
    config.add_view_predicate("tm_active", pyramid_tm.TMActivePredicate)
    config.set_request_factory(Request)

    bind = settings.get(DBBIND_KEY) or make_engine(settings["sqlalchemy.url"])
    config.registry["dbbind"] = bind
    config.registry["dbsession_factory"] = make_session_factory(bind)
    config.registry["read_session_factory"] = make_read_session_factory(bind)
