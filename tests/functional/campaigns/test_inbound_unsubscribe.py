"""POST /webhooks/sendgrid/inbound: the mailto half of List-Unsubscribe, end to end.

The message's own ``List-Unsubscribe`` header gives the mailto address and subject; the
test posts what SendGrid's Inbound Parse would post for a mail sent there.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from urllib.parse import unquote

import pytest
import sqlalchemy as sa
import webtest

from campaigns import dispatch
from campaigns.channels.outbox import OutboxTransport
from campaigns.models import OutboxMessage
from prefcenter.models import ConsentLedgerEntry, TopicSubscription
from tests.campaign_builders import make_campaign, planned
from tests.conftest import wsgi_app
from tests.factories import make_topic
from tests.policy_builders import KEY, reachable_customer, settings

CFG = settings()
AT = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
SECRET = "inbound-" + "s" * 24


def basic(password: str) -> dict[str, str]:
    token = base64.b64encode(f"inbound:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def inbound(connection, broker) -> webtest.TestApp:
    return webtest.TestApp(
        wsgi_app(
            connection,
            broker,
            **{
                "prefcenter.address_hmac_key": KEY.decode(),
                "sendgrid.inbound_parse_secret": SECRET,
            },
        )
    )


@pytest.fixture
def mailed(dbsession):
    """A customer sent one marketing email, and the mailto its List-Unsubscribe offers."""
    topic = make_topic(dbsession, key="offers")
    customer = reachable_customer(dbsession, topic)
    content = {"email": {"fr": {"subject": "Soldes", "text": "Bonjour"}}}
    campaign = make_campaign(dbsession, topic, ("email",), content=content, status="running")
    planned(dbsession, campaign, (customer,), AT, CFG)
    links = dispatch.Links(
        "https://prefs.example.com", "x" * 40, unsubscribe_mailto="unsubscribe@example.com"
    )
    sender = dispatch.Dispatcher(CFG, links, {"email": OutboxTransport()})
    dispatch.send_deliveries(dbsession, dispatch.queue_due(dbsession, AT), AT, sender)
    message = dbsession.scalars(sa.select(OutboxMessage)).one()
    to, subject = re.search(
        r"<mailto:([^?>]+)\?subject=([^>]+)>", message.headers["List-Unsubscribe"]
    ).groups()
    return topic, customer, to, unquote(subject)


def subscription(dbsession, customer, topic) -> str | None:
    dbsession.expire_all()
    return dbsession.scalar(
        sa.select(TopicSubscription.status).where(
            TopicSubscription.customer_id == customer.id, TopicSubscription.topic_id == topic.id
        )
    )


def ledger(dbsession, customer) -> list[ConsentLedgerEntry]:
    return list(
        dbsession.scalars(
            sa.select(ConsentLedgerEntry)
            .where(ConsentLedgerEntry.customer_id == customer.id)
            .order_by(ConsentLedgerEntry.id)
        )
    )


def send_mail(app, fields: dict[str, str], headers=None, **kwargs):
    """POST what Inbound Parse posts for one mail (multipart/form-data)."""
    return app.post(
        "/webhooks/sendgrid/inbound",
        fields,
        headers=basic(SECRET) if headers is None else headers,
        content_type="multipart/form-data",
        **kwargs,
    )


def parse_post(to: str, subject: str, sender: str) -> dict[str, str]:
    """The fields SendGrid's Inbound Parse posts (multipart/form-data) for one mail."""
    return {
        "to": to,
        "from": sender,
        "subject": subject,
        "text": "",
        "envelope": f'{{"to":["{to}"],"from":"{sender}"}}',
        "SPF": "pass",
    }


def test_a_mail_to_the_mailto_address_unsubscribes_from_the_campaigns_topic(
    inbound, dbsession, mailed
):
    topic, customer, to, subject = mailed
    assert to == "unsubscribe@example.com" and subject.startswith("unsubscribe ")
    before = len(ledger(dbsession, customer))

    answer = send_mail(inbound, parse_post(to, subject, customer.email))

    assert answer.json == {
        "unsubscribed": True,
        "reason": "unsubscribed from the campaign's topic",
        "topic": "offers",
    }
    assert subscription(dbsession, customer, topic) == "unsubscribed"
    entries = ledger(dbsession, customer)[before:]
    assert [(e.actor_type, e.actor_id, e.after) for e in entries] == [
        ("customer", str(customer.id), "unsubscribed")
    ]
    assert "mailto" in entries[0].user_agent

    # The same mail again (a client that retries): nothing more is written.
    again = send_mail(inbound, parse_post(to, f"Re: {subject}", customer.email))
    assert again.json["unsubscribed"] is True
    assert len(ledger(dbsession, customer)) == before + 1


def test_raw_mime_posts_are_read_too(inbound, dbsession, mailed):
    topic, customer, to, subject = mailed
    raw = f"From: {customer.email}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n\r\n"

    send_mail(inbound, {"email": raw, "to": to})

    assert subscription(dbsession, customer, topic) == "unsubscribed"


@pytest.mark.parametrize(
    "headers",
    [{}, basic("wrong-password"), {"Authorization": "Basic !!notbase64"}, {"Authorization": "x"}],
)
def test_without_the_password_nothing_changes(inbound, dbsession, mailed, headers):
    topic, customer, to, subject = mailed
    before = len(ledger(dbsession, customer))

    answer = send_mail(
        inbound, parse_post(to, subject, customer.email), headers=headers, status=401
    )

    assert answer.headers["WWW-Authenticate"].startswith("Basic")
    assert subscription(dbsession, customer, topic) == "subscribed"
    assert len(ledger(dbsession, customer)) == before


@pytest.mark.parametrize(
    ("subject", "reason"),
    [
        ("hello", "the subject names no delivery"),
        ("unsubscribe 5f0c6d1e-9a3b-4c2d-8e7f-0a1b2c3d4e5f", "no email delivery has that id"),
    ],
)
def test_a_mail_naming_no_known_delivery_changes_nothing(
    inbound, dbsession, mailed, subject, reason
):
    topic, customer, to, _subject = mailed
    before = len(ledger(dbsession, customer))

    answer = send_mail(inbound, parse_post(to, subject, customer.email))

    # 200: SendGrid would otherwise post the same mail again for days.
    assert answer.json == {"unsubscribed": False, "reason": reason, "topic": None}
    assert subscription(dbsession, customer, topic) == "subscribed"
    assert len(ledger(dbsession, customer)) == before


def test_without_a_configured_secret_every_post_is_refused(connection, broker, dbsession, mailed):
    app = webtest.TestApp(wsgi_app(connection, broker))
    _topic, customer, to, subject = mailed

    send_mail(app, parse_post(to, subject, customer.email), headers=basic(""), status=401)
