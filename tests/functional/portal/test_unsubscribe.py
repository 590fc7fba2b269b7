"""Unsubscribe links without logging in, and RFC 8058 one-click (also with curl)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import uuid

import pytest
import sqlalchemy as sa
import webtest
from webtest.http import StopableWSGIServer

from prefcenter.models import ConsentLedgerEntry, TopicSubscription, utcnow
from tests.conftest import need_service
from tests.factories import make_customer, make_topic
from tests.functional.portal.conftest import unsubscribe_path

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def topics(dbsession):
    return {
        "offers": make_topic(dbsession, key="offers", names={"fr": "Bons plans", "en": "Deals"}),
        "news": make_topic(dbsession, key="news", regime="opt_out"),
        "alerts": make_topic(dbsession, key="points", kind="alert"),
    }


@pytest.fixture
def subscriber(dbsession, topics):
    customer = make_customer(dbsession)
    for topic in topics.values():
        dbsession.add(
            TopicSubscription(customer_id=customer.id, topic_id=topic.id, status="subscribed")
        )
    dbsession.flush()
    return customer


def statuses(dbsession, customer) -> dict[str, str]:
    dbsession.expire_all()
    rows = dbsession.scalars(
        sa.select(TopicSubscription).where(TopicSubscription.customer_id == customer.id)
    )
    return {row.topic.key: row.status for row in rows}


def ledger_rows(dbsession, customer):
    return dbsession.scalars(
        sa.select(ConsentLedgerEntry).where(ConsentLedgerEntry.customer_id == customer.id)
    ).all()


def test_get_changes_nothing_and_shows_a_confirmation_form(portal, dbsession, subscriber):
    page = portal.get(unsubscribe_path(subscriber.id, "offers"))
    assert page.html.find("h1").text == "Se désabonner"
    assert "Ne plus recevoir « Bons plans » ?" in page.text
    form = page.forms[0]
    assert form.method.upper() == "POST" and form["List-Unsubscribe"].value == "One-Click"
    assert statuses(dbsession, subscriber)["offers"] == "subscribed"
    assert ledger_rows(dbsession, subscriber) == []


def test_one_click_post_without_cookie_or_csrf_twice(app, dbsession, subscriber):
    client = webtest.TestApp(app)  # no cookie, no page fetched first
    path = unsubscribe_path(subscriber.id, "offers")
    for _ in range(2):
        response = client.post(path, ONE_CLICK, status=200)
        assert "Location" not in response.headers
    assert statuses(dbsession, subscriber) == {
        "offers": "unsubscribed",
        "news": "subscribed",
        "points": "subscribed",
    }
    rows = ledger_rows(dbsession, subscriber)
    assert [(r.field, r.before, r.after) for r in rows] == [
        ("topic.offers", "subscribed", "unsubscribed")
    ]
    assert rows[0].actor_type == "customer"


def test_the_confirmation_form_unsubscribes(portal, dbsession, subscriber):
    page = portal.get(unsubscribe_path(subscriber.id, "offers"))
    done = page.forms[0].submit(status=200)
    assert "C\u2019est fait" in done.text
    assert statuses(dbsession, subscriber)["offers"] == "unsubscribed"


def test_all_marketing_link_leaves_every_marketing_topic_but_not_alerts(app, dbsession, subscriber):
    webtest.TestApp(app).post(unsubscribe_path(subscriber.id, None), ONE_CLICK, status=200)
    assert statuses(dbsession, subscriber) == {
        "offers": "unsubscribed",
        "news": "unsubscribed",
        "points": "subscribed",
    }


def test_topic_page_offers_all_marketing_with_csrf(portal, dbsession, subscriber):
    path = unsubscribe_path(subscriber.id, "offers")
    page = portal.get(path)
    portal.post(path + "/all", status=400)  # no CSRF token: refused
    assert statuses(dbsession, subscriber)["news"] == "subscribed"
    page.forms[1].submit(status=200)
    assert statuses(dbsession, subscriber)["news"] == "unsubscribed"


def test_a_post_without_the_one_click_body_changes_nothing(app, dbsession, subscriber):
    webtest.TestApp(app).post(unsubscribe_path(subscriber.id, "offers"), {}, status=400)
    assert ledger_rows(dbsession, subscriber) == []


def test_invalid_tokens_change_nothing_and_reveal_nothing(app, dbsession, subscriber):
    client = webtest.TestApp(app)
    genuine = unsubscribe_path(subscriber.id, "offers")
    forged = genuine[:-4] + ("AAAA" if not genuine.endswith("AAAA") else "BBBB")
    nobody = unsubscribe_path(uuid.uuid4(), "offers")
    unknown_topic = unsubscribe_path(subscriber.id, "gone")
    pages = [client.post(p, ONE_CLICK, status=400) for p in (forged, nobody, unknown_topic)]
    pages.append(client.post("/u/not-a-token", ONE_CLICK, status=400))
    pages.append(client.get(forged, status=400))
    texts = {p.html.find("main").text for p in pages}
    assert len(texts) == 1
    assert "Ce lien n\u2019est pas valide" in texts.pop()
    assert ledger_rows(dbsession, subscriber) == []


def test_an_expired_link_says_so_and_changes_nothing(app, dbsession, subscriber):
    old = utcnow() - dt.timedelta(days=100)
    path = unsubscribe_path(subscriber.id, "offers", days=90, now=old)
    page = webtest.TestApp(app).post(path, ONE_CLICK, status=403)
    assert "Ce lien a expiré" in page.text
    assert ledger_rows(dbsession, subscriber) == []


def test_page_speaks_the_customer_language(app, dbsession, topics):
    customer = make_customer(dbsession, locale="en")
    page = webtest.TestApp(app).get(unsubscribe_path(customer.id, "offers"))
    assert "Stop receiving “Deals”?" in page.text


def test_links_never_contain_an_email_address(dbsession, subscriber):
    assert "@" not in unsubscribe_path(subscriber.id, "offers")


def test_curl_one_click_against_a_real_server_twice(app, dbsession, subscriber):
    curl = shutil.which("curl")
    if curl is None:
        need_service("curl", "the curl command is not installed")
    server = StopableWSGIServer.create(app, host="127.0.0.1", port=0)
    try:
        url = f"http://127.0.0.1:{server.effective_port}" + unsubscribe_path(
            subscriber.id, "offers"
        )
        for _ in range(2):
            result = subprocess.run(
                [
                    curl,
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{redirect_url}",
                    "-X",
                    "POST",
                    "-d",
                    "List-Unsubscribe=One-Click",
                    url,
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            assert result.stdout.strip() == "200"
    finally:
        server.shutdown()
    assert statuses(dbsession, subscriber)["offers"] == "unsubscribed"
    assert len(ledger_rows(dbsession, subscriber)) == 1
