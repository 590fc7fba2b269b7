"""The app factory: ``prefcenter.main({}, **settings)`` as PasteDeploy calls it.

Settings here are written the way an ini file gives them (strings); each test builds a
real app on a SQLite file migrated to head and talks to it through WebTest.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
import webtest
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from pyramid.interfaces import IRoutesMapper
from pyramid.paster import get_app

import prefcenter
from prefcenter import tasks
from prefcenter.db import make_engine
from prefcenter.migrate import upgrade
from prefcenter.models import WorkerPing, utcnow
from prefcenter.settings import SettingsError
from tests.conftest import TEST_SECRET

OVERRIDES = ("DATABASE_URL", "BROKER_URL", "SENDGRID_API_KEY", "PREFCENTER_SECRET")
UNREACHABLE_POSTGRES = "postgresql+psycopg://nobody@127.0.0.1:1/none"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"

# Every route of the app, in matching order (Pyramid tries them top to bottom).
# Adding, renaming or moving a URL is a conscious decision: update this table with it.
ROUTES = [
    ("__static/", "static/*subpath"),
    ("home", "/"),
    ("healthz", "/healthz"),
    ("portal_link", "/p/{token}"),
    ("portal_login", "/portal/login"),
    ("portal_logout", "/portal/logout"),
    ("portal_home", "/portal"),
    ("portal_channels", "/portal/channels"),
    ("portal_address", "/portal/address/{kind}"),
    ("portal_consent", "/portal/channels/{channel}/{action}"),
    ("portal_confirm_email", "/portal/confirm/{token}"),
    ("portal_topics", "/portal/topics"),
    ("portal_frequency", "/portal/frequency"),
    ("portal_pause", "/portal/pause"),
    ("portal_resume", "/portal/resume"),
    ("portal_hours", "/portal/hours"),
    ("portal_order", "/portal/order"),
    ("portal_callback", "/portal/callback"),
    ("portal_data", "/portal/data"),
    ("portal_export", "/portal/data/export.json"),
    ("portal_erase", "/portal/data/erase"),
    ("unsubscribe", "/u/{token}"),
    ("unsubscribe_all", "/u/{token}/all"),
    ("api_openapi", "/api/v1/openapi.yaml"),
    ("api_docs", "/api/v1/docs"),
    ("api_customers", "/api/v1/customers"),
    ("api_customer", "/api/v1/customers/{external_id}"),
    ("api_preferences", "/api/v1/customers/{external_id}/preferences"),
    ("api_decision", "/api/v1/customers/{external_id}/decision"),
    ("api_export", "/api/v1/customers/{external_id}/export"),
    ("api_interactions", "/api/v1/interactions"),
    ("api_alerts", "/api/v1/alerts"),
    ("api_topics", "/api/v1/topics"),
    ("api_topic", "/api/v1/topics/{key}"),
    ("api_pressure_policy", "/api/v1/pressure-policy"),
    ("api_webhooks", "/api/v1/webhooks"),
    ("api_webhook", "/api/v1/webhooks/{webhook_id}"),
    ("sendgrid_events", "/webhooks/sendgrid"),
    ("sendgrid_inbound", "/webhooks/sendgrid/inbound"),
    ("api_campaigns", "/api/v1/campaigns"),
    ("api_campaign", "/api/v1/campaigns/{campaign_id}"),
    ("api_campaign_launch", "/api/v1/campaigns/{campaign_id}/launch"),
    ("api_campaign_pause", "/api/v1/campaigns/{campaign_id}/pause"),
    ("api_campaign_resume", "/api/v1/campaigns/{campaign_id}/resume"),
    ("api_campaign_cancel", "/api/v1/campaigns/{campaign_id}/cancel"),
    ("api_campaign_preview", "/api/v1/campaigns/{campaign_id}/preview"),
    ("api_campaign_forecast", "/api/v1/campaigns/{campaign_id}/forecast"),
    ("api_segment_count", "/api/v1/segments/count"),
    ("api_programs", "/api/v1/reengagement-programs"),
    ("api_program", "/api/v1/reengagement-programs/{program_id}"),
]


@pytest.fixture(autouse=True)
def no_environment_overrides(monkeypatch):
    """The settings under test decide; a DATABASE_URL in the developer's shell must not."""
    for name in OVERRIDES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def restore_task_sessions(monkeypatch):
    """An in-process worker hands the app's sessions to prefcenter.tasks; undo that."""
    monkeypatch.setattr(tasks, "_session_factory", tasks._session_factory)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    upgrade(url)
    return url


def ini_settings(database_url: str, **overrides: str) -> dict[str, str]:
    """What development.ini's [app:main] gives main(): strings only."""
    settings = {
        "prefcenter.env": "development",
        "sqlalchemy.url": database_url,
        "dramatiq.broker_url": "stub://",
        "prefcenter.worker.in_process": "false",
        "prefcenter.worker.threads": "2",
        "prefcenter.secret": TEST_SECRET,
        "prefcenter.email.transport": "outbox",
        "prefcenter.email.from": "Test <test@example.com>",
        "prefcenter.sms.transport": "outbox",
        "pyramid.default_locale_name": "fr",
    }
    settings.update(overrides)
    return settings


def problems_of(excinfo: pytest.ExceptionInfo[SettingsError]) -> str:
    return "\n".join(excinfo.value.problems)


# -- building the app ---------------------------------------------------------------------


def test_main_builds_a_wsgi_app_that_serves_health_and_home(database_url):
    app = prefcenter.main({}, **ini_settings(database_url))
    testapp = webtest.TestApp(app)

    health = testapp.get("/healthz")
    assert health.json == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "ok"},
        "failing": [],
    }
    assert testapp.get("/").status_int == 200
    assert isinstance(app.registry["broker"], StubBroker)
    assert "in_process_worker" not in app.registry


def test_main_fills_in_defaults_for_settings_the_ini_leaves_out(database_url):
    app = prefcenter.main({}, **{"sqlalchemy.url": database_url, "prefcenter.secret": TEST_SECRET})

    settings = app.registry.settings
    assert settings["dramatiq.broker_url"] == "stub://"
    assert settings["prefcenter.email.transport"] == "outbox"
    assert settings["prefcenter.env"] == "development"
    assert "in_process_worker" not in app.registry


def test_the_paste_entry_point_builds_the_app_from_an_ini_file(database_url, tmp_path):
    ini = tmp_path / "app.ini"
    lines = ["[app:main]", "use = egg:prefcenter"]
    lines += [f"{key} = {value}" for key, value in ini_settings(database_url).items()]
    ini.write_text("\n".join(lines) + "\n")

    app = get_app(str(ini))

    assert webtest.TestApp(app).get("/healthz").json["status"] == "ok"


# -- environment variables override the ini -----------------------------------------------


def test_database_url_from_the_environment_overrides_the_ini(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)

    app = prefcenter.main({}, **ini_settings(UNREACHABLE_POSTGRES))

    assert app.registry.settings["sqlalchemy.url"] == database_url
    # The ini's database does not answer: a 200 proves the request used the override.
    assert webtest.TestApp(app).get("/healthz").json["checks"]["database"] == "ok"


def test_broker_url_from_the_environment_overrides_the_ini(database_url, monkeypatch):
    monkeypatch.setenv("BROKER_URL", UNREACHABLE_REDIS)

    app = prefcenter.main({}, **ini_settings(database_url, **{"dramatiq.broker_url": "stub://"}))

    assert app.registry.settings["dramatiq.broker_url"] == UNREACHABLE_REDIS
    assert isinstance(app.registry["broker"], RedisBroker)
    response = webtest.TestApp(app).get("/healthz", status=503)
    assert response.json["failing"] == ["broker"]


def test_secret_from_the_environment_overrides_a_short_one_in_the_ini(database_url, monkeypatch):
    secret = "environment-secret-" + "s" * 32
    monkeypatch.setenv("PREFCENTER_SECRET", secret)

    app = prefcenter.main({}, **ini_settings(database_url, **{"prefcenter.secret": "short"}))

    assert app.registry.settings["prefcenter.secret"] == secret


def test_an_empty_environment_variable_does_not_override_the_ini(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "")

    app = prefcenter.main({}, **ini_settings(database_url))

    assert app.registry.settings["sqlalchemy.url"] == database_url


def test_env_values_in_the_ini_are_read_from_the_environment(database_url, monkeypatch):
    monkeypatch.setenv("PREFCENTER_TEST_APP_DATABASE", database_url)

    app = prefcenter.main(
        {}, **ini_settings("x", **{"sqlalchemy.url": "env:PREFCENTER_TEST_APP_DATABASE"})
    )

    assert app.registry.settings["sqlalchemy.url"] == database_url


# -- settings that cannot be used ---------------------------------------------------------


def test_a_missing_env_variable_is_named(database_url, monkeypatch):
    monkeypatch.delenv("PREFCENTER_TEST_APP_MISSING", raising=False)
    settings = ini_settings(database_url, **{"sqlalchemy.url": "env:PREFCENTER_TEST_APP_MISSING"})

    with pytest.raises(SettingsError) as excinfo:
        prefcenter.main({}, **settings)

    [problem] = excinfo.value.problems
    assert problem.startswith(
        "sqlalchemy.url: environment variable PREFCENTER_TEST_APP_MISSING is not set"
    )


def test_every_missing_env_variable_of_production_ini_is_named_at_once(database_url):
    settings = ini_settings(
        database_url,
        **{
            "prefcenter.env": "production",
            "sqlalchemy.url": "env:DATABASE_URL",
            "dramatiq.broker_url": "env:BROKER_URL",
            "sendgrid.api_key": "env:SENDGRID_API_KEY",
            "prefcenter.secret": "env:PREFCENTER_SECRET",
            "prefcenter.email.transport": "sendgrid",
        },
    )

    with pytest.raises(SettingsError) as excinfo:
        prefcenter.main({}, **settings)

    assert len(excinfo.value.problems) == 4
    for variable in OVERRIDES:
        assert f"environment variable {variable} is not set" in problems_of(excinfo)
    assert str(excinfo.value).startswith("prefcenter cannot start")


def test_a_database_url_that_is_not_a_url_is_named_with_its_value(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "nonsense")

    with pytest.raises(SettingsError) as excinfo:
        prefcenter.main({}, **ini_settings(database_url))

    assert problems_of(excinfo) == (
        "sqlalchemy.url (DATABASE_URL): 'nonsense' is not a database URL "
        "(expected e.g. postgresql+psycopg://user@host/dbname)"
    )


def test_an_unsupported_database_is_named_without_its_password(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "mysql://shop:hunter2@db.example.com/shop")

    with pytest.raises(SettingsError) as excinfo:
        prefcenter.main({}, **ini_settings(database_url))

    message = problems_of(excinfo)
    assert message.startswith("sqlalchemy.url (DATABASE_URL): backend 'mysql' is not supported")
    assert "hunter2" not in str(excinfo.value)


def test_a_broker_url_that_is_not_a_broker_is_named_with_its_password_hidden(
    database_url, monkeypatch
):
    monkeypatch.setenv("BROKER_URL", "http://queue:hunter2@broker.example.com/")

    with pytest.raises(SettingsError) as excinfo:
        prefcenter.main({}, **ini_settings(database_url))

    assert problems_of(excinfo) == (
        "dramatiq.broker_url (BROKER_URL): 'http://queue:***@broker.example.com/' is not a "
        "broker URL (expected redis://host:6379/0 or amqp://user:password@host:5672/)"
    )
    assert "hunter2" not in str(excinfo.value)


def test_a_short_secret_is_named_with_its_length_but_never_shown(database_url, monkeypatch):
    monkeypatch.setenv("PREFCENTER_SECRET", "tooshort")

    with pytest.raises(SettingsError) as excinfo:
        prefcenter.main({}, **ini_settings(database_url))

    message = problems_of(excinfo)
    assert message.startswith(
        "prefcenter.secret (PREFCENTER_SECRET): must be at least 32 characters long, got 8"
    )
    assert "tooshort" not in str(excinfo.value)


def test_a_sendgrid_key_of_the_wrong_shape_is_named_but_never_shown(database_url, monkeypatch):
    monkeypatch.setenv("SENDGRID_API_KEY", "not-a-sendgrid-key-4711")
    settings = ini_settings(database_url, **{"prefcenter.email.transport": "sendgrid"})

    with pytest.raises(SettingsError) as excinfo:
        prefcenter.main({}, **settings)

    assert problems_of(excinfo) == (
        "sendgrid.api_key (SENDGRID_API_KEY): a SendGrid API key starts with 'SG.'"
    )
    assert "4711" not in str(excinfo.value)


def test_the_sendgrid_key_is_only_required_when_sendgrid_sends_the_mail(database_url):
    app = prefcenter.main({}, **ini_settings(database_url, **{"sendgrid.api_key": "abc"}))

    assert app.registry.settings["prefcenter.email.transport"] == "outbox"


def test_every_malformed_setting_is_named_in_one_error(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "nonsense")
    monkeypatch.setenv("BROKER_URL", "http://x")
    monkeypatch.setenv("PREFCENTER_SECRET", "short")
    monkeypatch.setenv("SENDGRID_API_KEY", "abc")
    settings = ini_settings(database_url, **{"prefcenter.email.transport": "sendgrid"})

    with pytest.raises(SettingsError) as excinfo:
        prefcenter.main({}, **settings)

    named = [problem.split(":")[0] for problem in excinfo.value.problems]
    assert sorted(named) == [
        "dramatiq.broker_url (BROKER_URL)",
        "prefcenter.secret (PREFCENTER_SECRET)",
        "sendgrid.api_key (SENDGRID_API_KEY)",
        "sqlalchemy.url (DATABASE_URL)",
    ]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "postgresql+psycopg:/shop:hunter2@db.example.com/shop"),
        ("BROKER_URL", "redis//queue:hunter2@broker.example.com:6379/0"),
    ],
)
def test_a_malformed_url_never_shows_its_password(database_url, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)

    with pytest.raises(SettingsError) as excinfo:
        prefcenter.main({}, **ini_settings(database_url))

    assert "hunter2" not in str(excinfo.value)


def test_a_database_url_with_a_bad_port_is_a_settings_error(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://shop@db.example.com:port/shop")

    with pytest.raises(SettingsError) as excinfo:
        prefcenter.main({}, **ini_settings(database_url))

    assert "sqlalchemy.url (DATABASE_URL)" in problems_of(excinfo)


# -- the in-process worker (embedded mode) ------------------------------------------------


def test_main_starts_an_in_process_worker_that_runs_tasks(database_url):
    settings = ini_settings(
        database_url,
        **{"prefcenter.worker.in_process": "true", "prefcenter.worker.threads": "1"},
    )

    app = prefcenter.main({}, **settings)
    worker = app.registry["in_process_worker"]
    try:
        nonce = uuid.uuid4().hex
        message = tasks.record_worker_ping.actor.message(nonce, utcnow().isoformat())
        app.registry["broker"].enqueue(message)
        assert wait_for_ping(database_url, nonce) is not None, "the worker did not run the task"
    finally:
        worker.stop()


def wait_for_ping(url: str, nonce: str, timeout: float = 10.0) -> str | None:
    engine = make_engine(url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                worker = connection.scalar(
                    sa.select(WorkerPing.worker).where(WorkerPing.nonce == nonce)
                )
            if worker is not None:
                return worker
            time.sleep(0.05)
        return None
    finally:
        engine.dispose()


# -- the route table ----------------------------------------------------------------------


def test_the_route_table_is_pinned(database_url):
    app = prefcenter.main({}, **ini_settings(database_url))

    mapper = app.registry.getUtility(IRoutesMapper)
    assert [(route.name, route.pattern) for route in mapper.get_routes()] == ROUTES


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("BROKER_URL", "redis://queue.example.com:99999/0", "dramatiq.broker_url (BROKER_URL)"),
        ("DATABASE_URL", "postgresql+psycopg://shop@db.example.com:99999/shop", "port 99999"),
    ],
)
def test_a_port_out_of_range_is_a_settings_error(database_url, monkeypatch, variable, value, named):
    monkeypatch.setenv(variable, value)

    with pytest.raises(SettingsError) as excinfo:
        prefcenter.main({}, **ini_settings(database_url))

    assert named in problems_of(excinfo)
