from webtest import TestApp

from prefcenter import make_wsgi_app
from tests.conftest import app_settings


def test_healthz_ok_when_database_and_broker_answer(testapp):
    response = testapp.get("/healthz")
    assert response.json == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "ok"},
        "failing": [],
    }


def test_healthz_names_the_database_when_it_is_down():
    app = make_wsgi_app(
        app_settings(**{"sqlalchemy.url": "postgresql+psycopg://nobody@127.0.0.1:1/none"})
    )
    response = TestApp(app).get("/healthz", status=503)
    assert response.json["status"] == "unavailable"
    assert response.json["failing"] == ["database"]
    assert response.json["checks"]["database"].startswith("error: OperationalError")
    assert response.json["checks"]["broker"] == "ok"


def test_healthz_names_the_broker_when_it_is_down(connection):
    from prefcenter.db import DBBIND_KEY

    app = make_wsgi_app(
        app_settings(**{DBBIND_KEY: connection, "dramatiq.broker_url": "redis://127.0.0.1:1/0"})
    )
    response = TestApp(app).get("/healthz", status=503)
    assert response.json["failing"] == ["broker"]
    assert response.json["checks"]["database"] == "ok"
    assert "ConnectionError" in response.json["checks"]["broker"]


def test_home_page_renders(testapp):
    response = testapp.get("/")
    assert response.status_int == 200
    assert response.html.find("h1") is not None
