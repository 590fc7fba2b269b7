"""Portal test helpers: a recording courier, signed links and logged-in test apps."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import webtest

from prefcenter.models import utcnow
from prefcenter.portal.courier import PortalMessage
from prefcenter.portal.links import portal_token, unsubscribe_token
from prefcenter.services import preferences
from prefcenter.services.ledger import Actor
from tests.conftest import TEST_SECRET
from tests.factories import make_customer


class RecordingCourier:
    """Keeps what the portal would send, so a test can read the link or code."""

    def __init__(self) -> None:
        self.sent: list[PortalMessage] = []

    def send(self, message: PortalMessage) -> None:
        self.sent.append(message)

    def last(self, kind: str) -> PortalMessage:
        return [m for m in self.sent if m.kind == kind][-1]


@pytest.fixture
def courier(app: Any) -> RecordingCourier:
    recorder = RecordingCourier()
    app.registry["portal.courier"] = recorder
    return recorder


def link_path(customer_id: Any, *, hours: int = 72, now: dt.datetime | None = None) -> str:
    return "/p/" + portal_token(TEST_SECRET, customer_id, hours=hours, now=now or utcnow())


def unsubscribe_path(customer_id: Any, topic_key: str | None, *, days: int = 90, now=None) -> str:
    token = unsubscribe_token(TEST_SECRET, customer_id, topic_key, days=days, now=now or utcnow())
    return "/u/" + token


def log_in(testapp: webtest.TestApp, customer: Any, lang: str | None = None) -> webtest.TestApp:
    response = testapp.get(link_path(customer.id), status=303)
    assert response.location.endswith("/portal")
    if lang:
        testapp.get(f"/portal?lang={lang}")
    return testapp


def csrf_token(testapp: webtest.TestApp, path: str = "/portal/login") -> str:
    page = testapp.get(path)
    return page.html.find("input", {"name": "csrf_token"})["value"]


def confirm_email(app: Any, dbsession: Any, customer: Any) -> Any:
    """Run the customer's email double opt-in to the end, as the link in the email would."""
    cfg = app.registry["portal.settings"].consent
    actor = Actor.customer(customer.id)
    challenge = preferences.start_double_opt_in(
        dbsession, customer, "email", actor, cfg=cfg, secret=TEST_SECRET
    )
    result = preferences.confirm_double_opt_in(
        dbsession, customer, "email", challenge.token or "", actor, cfg=cfg, secret=TEST_SECRET
    )
    assert result is preferences.ConfirmResult.CONFIRMED
    return customer


def confirmed_customer(app: Any, dbsession: Any, **fields: Any) -> Any:
    """A customer whose email address is confirmed (who may get a magic link)."""
    return confirm_email(app, dbsession, make_customer(dbsession, **fields))


BROWSER = {"REMOTE_ADDR": "203.0.113.5", "HTTP_USER_AGENT": "TestBrowser/1.0"}


@pytest.fixture
def portal(app: Any, courier: RecordingCourier) -> webtest.TestApp:
    """A browser with a fixed IP address and user agent (what the ledger must record)."""
    return webtest.TestApp(app, extra_environ=dict(BROWSER))
