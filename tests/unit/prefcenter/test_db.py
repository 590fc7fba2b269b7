"""The zope transaction wiring: listeners registered once per session factory."""

from __future__ import annotations

import types
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
import transaction
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from prefcenter.db import (
    TM_KEY,
    DriverQuery,
    Request,
    get_tm_session,
    lock_in_order,
    make_engine,
    make_read_session_factory,
    make_session_factory,
    mark_changed,
    read_without_transaction,
    set_local,
    single_read,
)
from tests.conftest import POSTGRES_ADMIN_URL, create_test_database

NOTES = sa.table("notes", sa.column("body", sa.String))


@pytest.fixture
def factory(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'tm.sqlite'}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE notes (body TEXT)")
    yield make_session_factory(engine)
    engine.dispose()


def _bodies(factory) -> list[str]:
    with factory() as session:
        return list(session.execute(sa.select(NOTES.c.body).order_by(NOTES.c.body)).scalars())


def _write(factory, body: str, *, mark: bool, abort: bool = False) -> None:
    manager = transaction.TransactionManager(explicit=True)
    manager.begin()
    session = get_tm_session(factory, manager)
    session.execute(sa.insert(NOTES).values(body=body))
    if mark:
        mark_changed(session)
    if abort:
        manager.abort()
    else:
        manager.commit()


def test_a_marked_core_write_is_committed_by_the_manager(factory):
    _write(factory, "kept", mark=True)
    assert _bodies(factory) == ["kept"]


def test_an_unmarked_core_write_is_not_committed(factory):
    # zope.sqlalchemy commits only sessions that said they wrote something.
    _write(factory, "lost", mark=False)
    assert _bodies(factory) == []


def test_an_aborted_transaction_commits_nothing(factory):
    _write(factory, "aborted", mark=True, abort=True)
    assert _bodies(factory) == []


class _Base(DeclarativeBase):
    pass


class _Note(_Base):
    __tablename__ = "notes"
    body: Mapped[str] = mapped_column(primary_key=True)


def test_an_orm_flush_marks_the_session_changed(factory):
    manager = transaction.TransactionManager(explicit=True)
    with manager:
        session = get_tm_session(factory, manager)
        session.add(_Note(body="orm"))
    assert _bodies(factory) == ["orm"]


def test_an_orm_update_statement_marks_the_session_changed(factory):
    _write(factory, "old", mark=True)
    manager = transaction.TransactionManager(explicit=True)
    with manager:
        session = get_tm_session(factory, manager)
        session.execute(sa.update(_Note).values(body="new"))
    assert _bodies(factory) == ["new"]


def test_each_session_answers_to_its_own_manager(factory):
    first, second = (transaction.TransactionManager(explicit=True) for _ in range(2))
    first.begin()
    second.begin()
    one = get_tm_session(factory, first)
    two = get_tm_session(factory, second)
    one.execute(sa.insert(NOTES).values(body="first"))
    mark_changed(one)
    first.commit()
    two.execute(sa.insert(NOTES).values(body="second"))
    mark_changed(two)
    second.abort()
    assert _bodies(factory) == ["first"]


def test_committing_the_session_itself_is_refused(factory):
    manager = transaction.TransactionManager(explicit=True)
    manager.begin()
    session = get_tm_session(factory, manager)
    session.execute(sa.insert(NOTES).values(body="x"))
    with pytest.raises(AssertionError, match="transaction manager"):
        session.commit()
    manager.abort()
    assert _bodies(factory) == []


def test_a_plain_session_from_the_factory_commits_by_itself(factory):
    with factory() as session:
        session.execute(sa.insert(NOTES).values(body="plain"))
        session.commit()
    assert _bodies(factory) == ["plain"]


@pytest.fixture
def postgres_url(tmp_path_factory):
    db = create_test_database("postgresql", tmp_path_factory)
    yield db.url
    db.drop()


def _terminate_pooled_backends(url: str) -> None:
    name = sa.engine.make_url(url).database
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": name},
        )
    admin.dispose()


@pytest.mark.parametrize(("idle_after", "survives"), [(0.0, True), (3600.0, False)])
def test_a_connection_idle_long_enough_is_pinged_and_replaced_if_dead(
    postgres_url, idle_after, survives
):
    engine = make_engine(postgres_url, ping_idle_after=idle_after)
    with engine.connect() as connection:
        assert connection.scalar(sa.text("SELECT 1")) == 1
    # The server drops the pooled connection (a restart, an idle timeout, a firewall).
    _terminate_pooled_backends(postgres_url)

    if survives:
        # Idle for longer than the threshold: pinged at checkout, found dead, replaced.
        with engine.connect() as connection:
            assert connection.scalar(sa.text("SELECT 2")) == 2
    else:
        # In steady use no ping is spent: the first statement finds the dead connection
        # (SQLAlchemy then invalidates the pool, and the next checkout connects anew).
        with pytest.raises(sa.exc.OperationalError), engine.connect() as connection:
            connection.scalar(sa.text("SELECT 2"))
        with engine.connect() as connection:
            assert connection.scalar(sa.text("SELECT 3")) == 3
    engine.dispose()


def test_set_local_sets_until_the_transaction_ends_and_returns_the_old_values(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL settings")
    with Session(engine) as session:
        before = session.scalar(sa.text("SELECT current_setting('work_mem')"))
        saved = set_local(session, {"work_mem": "77MB", "jit": "off"})
        assert saved["work_mem"] == before
        assert session.scalar(sa.text("SELECT current_setting('work_mem')")) == "77MB"
        assert session.scalar(sa.text("SELECT current_setting('jit')")) == "off"
        assert set_local(session, saved) == {"work_mem": "77MB", "jit": "off"}
        assert set_local(session, {"prefcenter.test_never_set": "on"}) == {
            "prefcenter.test_never_set": None
        }
        custom = sa.text("SELECT current_setting('prefcenter.test_never_set')")
        assert session.scalar(custom) == "on"
        assert session.scalar(sa.text("SELECT current_setting('work_mem')")) == before
        set_local(session, {"work_mem": "78MB"})
        session.rollback()
        assert session.scalar(sa.text("SELECT current_setting('work_mem')")) == before


def test_read_without_transaction_sends_no_begin_and_the_pool_gets_its_mode_back(database):
    engine = make_engine(database.url)
    try:
        with Session(engine) as session:
            read_without_transaction(session)
            assert session.scalar(sa.text("SELECT 1")) == 1
            raw = session.connection().connection.dbapi_connection
            if database.backend == "postgresql":
                assert raw.autocommit is True
                assert raw.info.transaction_status.name == "IDLE"  # no BEGIN was sent
        with Session(engine) as session:  # the same pooled connection, back to normal
            session.scalar(sa.text("SELECT 1"))
            raw = session.connection().connection.dbapi_connection
            if database.backend == "postgresql":
                assert raw.autocommit is False
                assert raw.info.transaction_status.name == "INTRANS"
    finally:
        engine.dispose()


def test_lock_in_order_holds_the_rows_until_the_transaction_ends(database):
    if database.backend != "postgresql":
        pytest.skip("SQLite serializes writers: there is nothing to lock")
    engine = make_engine(database.url)
    table = f"lock_test_{uuid.uuid4().hex[:8]}"
    ids = [str(uuid.uuid4()) for _ in range(3)]
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"CREATE TABLE {table} (id uuid PRIMARY KEY)")
            connection.exec_driver_sql(f"INSERT INTO {table} VALUES ('{ids[0]}'), ('{ids[1]}')")
        rows = sa.table(table, sa.column("id", sa.Uuid))
        with Session(engine) as holder, engine.connect() as other:
            lock_in_order(holder, rows.c.id, [ids[1], ids[2], ids[0]])
            for locked in ids[:2]:
                with pytest.raises(sa.exc.OperationalError, match="could not obtain lock"):
                    other.exec_driver_sql(
                        f"SELECT 1 FROM {table} WHERE id = '{locked}' FOR UPDATE NOWAIT"
                    )
                other.rollback()
            holder.rollback()
            other.exec_driver_sql(f"SELECT 1 FROM {table} FOR UPDATE NOWAIT")  # released
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        engine.dispose()


def test_a_single_read_has_a_session_of_its_own_closed_after_it(database):
    engine = make_engine(database.url)
    # No dbsession attribute: the request's own (transaction-bound) session is never made.
    factory = make_read_session_factory(engine)
    reads = factory.kw["bind"]
    request = types.SimpleNamespace(environ={}, registry={"read_session_factory": factory})
    try:
        for _ in range(2):  # the second time on the pooled connection
            with single_read(request) as session:
                assert session.scalar(sa.text("SELECT 1")) == 1
                assert TM_KEY not in session.info  # not joined to any transaction manager
                raw = session.connection().connection.dbapi_connection
                if database.backend == "postgresql":
                    assert reads is not engine  # an engine of its own, always in autocommit
                    assert raw.autocommit is True
                    assert raw.info.transaction_status.name == "IDLE"  # no BEGIN was sent
                assert reads.pool.checkedout() == 1
            assert reads.pool.checkedout() == 0  # closed: its connection is back in the pool
        if database.backend == "postgresql":
            assert engine.pool.checkedout() == 0
            with Session(engine) as session:  # the main engine's sessions: transactions
                session.scalar(sa.text("SELECT 1"))
                raw = session.connection().connection.dbapi_connection
                assert raw.info.transaction_status.name == "INTRANS"
    finally:
        reads.dispose()
        engine.dispose()


def test_a_single_read_in_a_test_uses_the_test_s_session(factory):
    mine = factory()
    request = types.SimpleNamespace(environ={"app.dbsession": mine}, dbsession=mine)
    with single_read(request) as session:
        assert session is mine


def test_a_driver_query_reads_in_the_session_s_transaction(postgres_url):
    engine = make_engine(postgres_url)
    table = sa.table("driver_notes", sa.column("body", sa.Text), sa.column("kind", sa.Text))
    query = DriverQuery(
        sa.select(sa.func.json_build_array(table.c.body, sa.literal("constant"))).where(
            table.c.kind == "note", table.c.body == sa.bindparam("body")
        )
    )
    try:
        with Session(engine) as session:
            session.execute(sa.text("CREATE TABLE driver_notes (body text, kind text)"))
            session.execute(sa.text("INSERT INTO driver_notes VALUES ('a', 'note'), ('b', 'x')"))
            # Uncommitted rows: the driver ran on the session's own connection.
            assert query.scalar(session, body="a") == ["a", "constant"]  # JSON, parsed
            assert query.scalar(session, body="b") is None  # the compiled constant applies
            assert query.scalar(session, body="nobody") is None
            session.rollback()
    finally:
        engine.dispose()


def test_a_request_has_one_transaction_manager_and_one_session(factory):
    from pyramid.registry import Registry

    registry = Registry()
    registry.settings = {"tm.manager_hook": "pyramid_tm.explicit_manager"}
    registry["dbsession_factory"] = factory
    request = Request.blank("/")
    request.registry = registry
    assert request.tm is request.tm  # made once, then kept on the request
    assert request.dbsession is request.dbsession
    assert request.dbsession.info[TM_KEY] is request.tm
    assert Request.blank("/").__class__ is Request  # no class made per request
