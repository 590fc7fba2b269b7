"""Shared fixtures: every database test runs on SQLite and, when configured, PostgreSQL.

PostgreSQL is used when PREFCENTER_TEST_POSTGRES_URL points at a server we may create
databases on (``make test`` sets it when a local server answers; ``.ci/run`` always
does). Outside CI a missing server skips those tests with the reason; in CI
(CI=true) it fails them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import webtest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy.orm import Session

import campaigns.models  # noqa: F401  (the campaign engine's tables are in every test database)
from prefcenter import make_wsgi_app
from prefcenter.db import DBBIND_KEY, make_engine
from prefcenter.migrate import upgrade
from prefcenter.settings import resolve_settings

IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_ADMIN_URL = os.environ.get("PREFCENTER_TEST_POSTGRES_URL", "")
TEST_SECRET = "test-secret-" + "x" * 40


def need_service(name: str, reason: str) -> None:
    """Skip on a developer's machine, fail in CI: CI must exercise every service."""
    message = f"{name} unavailable: {reason}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing service is a failure)")
    pytest.skip(message)


def _postgres_available() -> str | None:
    if not POSTGRES_ADMIN_URL:
        return "PREFCENTER_TEST_POSTGRES_URL is not set"
    try:
        engine = sa.create_engine(POSTGRES_ADMIN_URL)
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        engine.dispose()
    except sa.exc.OperationalError as exc:
        return f"cannot connect to {POSTGRES_ADMIN_URL}: {str(exc).splitlines()[0]}"
    return None


class TestDatabase:
    """A throw-away database created for this test session, migrated to head."""

    def __init__(self, backend: str, url: str, drop: Any = None) -> None:
        self.backend = backend
        self.url = url
        self._drop = drop

    def drop(self) -> None:
        if self._drop:
            self._drop()


def create_test_database(backend: str, tmp_path_factory: pytest.TempPathFactory) -> TestDatabase:
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "test.sqlite"
        return TestDatabase("sqlite", f"sqlite:///{path}")

    problem = _postgres_available()
    if problem:
        need_service("PostgreSQL", problem)
    name = f"prefcenter_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = (
        sa.engine.make_url(POSTGRES_ADMIN_URL)
        .set(database=name)
        .render_as_string(hide_password=False)
    )

    def drop() -> None:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    return TestDatabase("postgresql", url, drop)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    db = create_test_database(request.param, tmp_path_factory)
    try:
        upgrade(db.url)
        yield db
    finally:
        db.drop()


@pytest.fixture(scope="session")
def engine(database: TestDatabase) -> Iterator[sa.Engine]:
    engine = make_engine(database.url)
    yield engine
    engine.dispose()


@pytest.fixture
def connection(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection inside a transaction that is rolled back after the test."""
    with engine.connect() as connection:
        outer = connection.begin()
        yield connection
        if outer.is_active:
            outer.rollback()


@pytest.fixture
def dbsession(connection: sa.Connection) -> Iterator[Session]:
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    yield session
    session.close()


def app_settings(**overrides: Any) -> dict[str, Any]:
    settings = {
        "sqlalchemy.url": "sqlite://",
        "dramatiq.broker_url": "stub://",
        "prefcenter.secret": TEST_SECRET,
        "prefcenter.worker.in_process": "false",
        "prefcenter.email.transport": "outbox",
        "prefcenter.email.from": "Test <test@example.com>",
    }
    settings.update(overrides)
    return resolve_settings(settings, environ={})


@pytest.fixture
def broker() -> StubBroker:
    broker = StubBroker()
    broker.emit_after("process_boot")
    return broker


def wsgi_app(connection: sa.Connection, broker: StubBroker, **overrides: Any) -> Any:
    """The app on the test's connection and broker, with these settings on top."""
    return make_wsgi_app(
        app_settings(**{DBBIND_KEY: connection, "prefcenter.broker": broker, **overrides})
    )


@pytest.fixture
def app(connection: sa.Connection, broker: StubBroker):
    return wsgi_app(connection, broker)


@pytest.fixture
def testapp(app) -> webtest.TestApp:
    return webtest.TestApp(app)
