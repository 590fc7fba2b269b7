"""POST /webhooks/sendgrid with real ECDSA key pairs: verified, de-duplicated, mapped."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import uuid

import pytest
import sqlalchemy as sa
import webtest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from campaigns import dispatch, planner
from campaigns.channels.outbox import OutboxTransport
from campaigns.models import Campaign, Delivery, ProviderEvent
from prefcenter.models import (
    ChannelConsent,
    ConsentLedgerEntry,
    Customer,
    Interaction,
    Suppression,
    TopicSubscription,
)
from tests.conftest import wsgi_app
from tests.factories import make_topic
from tests.policy_builders import KEY, reachable_customer, settings

CFG = settings()
AT = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def key_pair() -> tuple[ec.EllipticCurvePrivateKey, str]:
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(public).decode()  # as SendGrid shows it


PRIVATE, PUBLIC = key_pair()


def signed(body: bytes, private=PRIVATE, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = private.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        "Content-Type": "application/json",
    }


@pytest.fixture
def webhook(connection, broker) -> webtest.TestApp:
    return webtest.TestApp(
        wsgi_app(
            connection,
            broker,
            **{
                "prefcenter.address_hmac_key": KEY.decode(),
                "sendgrid.webhook_verification_key": PUBLIC,
            },
        )
    )


@pytest.fixture
def sent(dbsession):
    """Two customers who were each sent one email of a campaign."""
    topic = make_topic(dbsession, key="offers")
    people = [reachable_customer(dbsession, topic) for _ in range(2)]
    campaign = Campaign(
        name="Spring",
        topic_id=topic.id,
        kind="marketing",
        channels=["email"],
        segment={"all": []},
        content={"email": {"fr": {"subject": "Soldes", "text": "Bonjour"}}},
        status="running",
    )
    dbsession.add(campaign)
    dbsession.flush()
    ids = [c.id for c in people]
    planner.plan(
        dbsession, campaign, sa.select(Customer.id).where(Customer.id.in_(ids)), AT, cfg=CFG
    )
    links = dispatch.Links("https://prefs.example.com", "x" * 40)
    sender = dispatch.Dispatcher(CFG, links, {"email": OutboxTransport()})
    dispatch.send_deliveries(dbsession, dispatch.queue_due(dbsession, AT), AT, sender)
    deliveries = {
        d.customer_id: d
        for d in dbsession.scalars(sa.select(Delivery).where(Delivery.campaign_id == campaign.id))
    }
    return topic, people, deliveries


def event(kind: str, delivery: Delivery, customer: Customer, **fields) -> dict:
    return {
        "email": customer.email,
        "timestamp": int(time.time()),
        "event": kind,
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": "abc.filter0001",
        "delivery_id": str(delivery.id),
        **fields,
    }


def post(webhook, events, **kwargs):
    body = json.dumps(events).encode()
    headers = kwargs.pop("headers", None) or signed(body)
    return webhook.post("/webhooks/sendgrid", body, headers=headers, **kwargs)


def status_of(dbsession, delivery) -> Delivery:
    dbsession.expire_all()
    return dbsession.get(Delivery, delivery.id)


def test_a_signed_batch_moves_deliveries_forward_and_records_engagement(webhook, dbsession, sent):
    _topic, (ann, bob), deliveries = sent
    batch = [
        event("processed", deliveries[ann.id], ann),
        event("processed", deliveries[bob.id], bob),
        event("delivered", deliveries[ann.id], ann),
        event("delivered", deliveries[bob.id], bob),
        event("open", deliveries[ann.id], ann),
        event("click", deliveries[bob.id], bob, url="https://example.com/sale"),
    ]

    answer = post(webhook, batch)

    assert answer.status_int == 200
    assert answer.json["new"] == 6 and answer.json["engagements"] == 2
    first, second = (
        status_of(dbsession, deliveries[ann.id]),
        status_of(dbsession, deliveries[bob.id]),
    )
    assert (first.status, second.status) == ("opened", "clicked")
    assert first.delivered_at is not None and second.delivered_at is not None
    kinds = dbsession.execute(
        sa.select(Interaction.customer_id, Interaction.kind).where(Interaction.source == "sendgrid")
    ).all()
    assert sorted(kinds, key=str) == sorted(
        [(ann.id, "email_open"), (bob.id, "email_click")], key=str
    )
    dbsession.refresh(bob)
    assert bob.last_interaction_at is not None


def test_a_late_delivered_never_undoes_an_open(webhook, dbsession, sent):
    _topic, (ann, _bob), deliveries = sent
    post(webhook, [event("open", deliveries[ann.id], ann)])
    post(webhook, [event("delivered", deliveries[ann.id], ann)])

    assert status_of(dbsession, deliveries[ann.id]).status == "opened"


def test_a_machine_open_is_recorded_but_is_not_engagement(webhook, dbsession, sent):
    _topic, (ann, _bob), deliveries = sent
    post(webhook, [event("open", deliveries[ann.id], ann, sg_machine_open=True)])

    delivery = status_of(dbsession, deliveries[ann.id])
    assert delivery.machine_opened_at is not None
    assert (delivery.status, delivery.opened_at) == ("sent", None)
    assert dbsession.scalar(sa.select(sa.func.count()).select_from(Interaction)) == 0
    dbsession.refresh(ann)
    assert ann.last_interaction_at is None


def test_replayed_batches_change_nothing_more(webhook, dbsession, sent):
    _topic, (_ann, bob), deliveries = sent
    batch = [event("click", deliveries[bob.id], bob)]

    first = post(webhook, batch).json
    again = post(webhook, batch).json  # SendGrid retrying: same sg_event_id, new signature

    assert (first["new"], again["new"], again["duplicates"]) == (1, 0, 1)
    assert dbsession.scalar(sa.select(sa.func.count()).select_from(Interaction)) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {},  # no signature at all
        {"signature": "bad"},  # another key signed it
        {"stale": True},  # signed an hour ago
        {"tampered": True},  # body changed after signing
    ],
)
def test_unsigned_forged_stale_or_tampered_batches_are_refused_and_change_nothing(
    webhook, dbsession, sent, headers
):
    _topic, (_ann, bob), deliveries = sent
    body = json.dumps([event("click", deliveries[bob.id], bob)]).encode()
    if not headers:
        sent_headers = {"Content-Type": "application/json"}
    elif "signature" in headers:
        sent_headers = signed(body, private=key_pair()[0])
    elif "stale" in headers:
        sent_headers = signed(body, timestamp=int(time.time()) - 3600)
    else:
        sent_headers = signed(body)
        body = body.replace(b"click", b"open ")

    answer = webhook.post("/webhooks/sendgrid", body, headers=sent_headers, status=403)

    assert answer.status_int == 403
    assert dbsession.scalar(sa.select(sa.func.count()).select_from(ProviderEvent)) == 0
    assert status_of(dbsession, deliveries[bob.id]).status == "sent"


def test_a_hard_bounce_fails_the_delivery_and_suppresses_the_address(webhook, dbsession, sent):
    _topic, (ann, bob), deliveries = sent
    post(
        webhook,
        [
            event("bounce", deliveries[ann.id], ann, type="bounce", reason="550 no such user"),
            event("bounce", deliveries[bob.id], bob, type="blocked", reason="421 try later"),
        ],
    )

    assert status_of(dbsession, deliveries[ann.id]).status == "failed"
    assert status_of(dbsession, deliveries[bob.id]).status == "sent"  # blocked is temporary
    reasons = dbsession.scalars(sa.select(Suppression.reason).where(Suppression.channel == "email"))
    assert list(reasons) == ["hard_bounce"]


def test_a_spam_report_refuses_email_through_the_ledger(webhook, dbsession, sent):
    _topic, (ann, _bob), deliveries = sent
    post(webhook, [event("spamreport", deliveries[ann.id], ann)])

    consent = dbsession.scalar(
        sa.select(ChannelConsent).where(
            ChannelConsent.customer_id == ann.id, ChannelConsent.channel == "email"
        )
    )
    dbsession.refresh(consent)
    assert consent.status == "refused"
    entry = dbsession.scalars(
        sa.select(ConsentLedgerEntry)
        .where(
            ConsentLedgerEntry.customer_id == ann.id, ConsentLedgerEntry.field == "consent.email"
        )
        .order_by(ConsentLedgerEntry.id.desc())
    ).first()
    assert (entry.actor_type, entry.actor_id, entry.after) == ("provider", "sendgrid", "refused")


def test_group_unsubscribe_and_resubscribe_follow_the_delivery_s_topic(webhook, dbsession, sent):
    topic, (ann, _bob), deliveries = sent

    post(webhook, [event("group_unsubscribe", deliveries[ann.id], ann, asm_group_id=1)])
    row = dbsession.get(TopicSubscription, (ann.id, topic.id))
    dbsession.refresh(row)
    assert row.status == "unsubscribed"
    post(webhook, [event("group_resubscribe", deliveries[ann.id], ann, asm_group_id=1)])
    dbsession.refresh(row)
    assert row.status == "subscribed"


def test_a_database_failure_answers_5xx_so_that_sendgrid_retries(
    webhook, dbsession, sent, monkeypatch
):
    from campaigns import events

    _topic, (_ann, bob), deliveries = sent

    def broken(*args, **kwargs):
        raise sa.exc.OperationalError("UPDATE deliveries", {}, Exception("database is gone"))

    monkeypatch.setattr(events, "_advance", broken)
    with pytest.raises(sa.exc.OperationalError):  # no 2xx: the server answers 500
        post(webhook, [event("click", deliveries[bob.id], bob)])
    # Nothing was kept, not even the event ids, so SendGrid's retry is processed in full.
    assert dbsession.scalar(sa.select(sa.func.count()).select_from(ProviderEvent)) == 0


# -- a whole batch at once: what one event after the other would have done -------------------


def ledger_of(dbsession, customer, prefix=""):
    dbsession.expire_all()
    return [
        (e.field, e.before, e.after, e.actor_type, e.actor_id)
        for e in dbsession.scalars(
            sa.select(ConsentLedgerEntry)
            .where(
                ConsentLedgerEntry.customer_id == customer.id,
                ConsentLedgerEntry.field.startswith(prefix),
            )
            .order_by(ConsentLedgerEntry.at, ConsentLedgerEntry.id)
        )
    ]


def subscription_of(dbsession, customer, topic):
    dbsession.expire_all()
    return dbsession.get(TopicSubscription, (customer.id, topic.id)).status


def test_a_mixed_batch_with_several_events_for_one_customer(webhook, dbsession, sent):
    topic, (ann, bob), deliveries = sent
    mine, t = deliveries[ann.id], int(time.time())
    batch = [
        event("delivered", mine, ann, timestamp=t - 50),
        event("click", mine, ann, timestamp=t - 40, url="https://example.com/sale"),
        event("spamreport", mine, ann, timestamp=t - 30),
        event("spamreport", mine, ann, timestamp=t - 29),  # reported twice: one change
        event("unsubscribe", mine, ann, timestamp=t - 20),
        event("group_unsubscribe", mine, ann, timestamp=t - 10),  # already unsubscribed
        event("bounce", deliveries[bob.id], bob, type="bounce", reason="550 no such user"),
    ]

    answer = post(webhook, batch).json

    assert (answer["new"], answer["engagements"], answer["consent_changes"]) == (7, 1, 2)
    assert answer["suppressed"] == 2  # ann's spam complaint (once), bob's hard bounce
    assert ledger_of(dbsession, ann, "consent.") == [
        ("consent.email", "granted", "refused", "provider", "sendgrid")
    ]
    assert ledger_of(dbsession, ann, "topic.") == [
        (f"topic.{topic.key}", "subscribed", "unsubscribed", "provider", "sendgrid")
    ]
    assert subscription_of(dbsession, ann, topic) == "unsubscribed"
    assert status_of(dbsession, mine).status == "clicked"
    assert status_of(dbsession, deliveries[bob.id]).status == "failed"
    assert ledger_of(dbsession, bob, "consent.") == []
    reasons = dbsession.execute(sa.select(Suppression.address_hmac, Suppression.reason)).all()
    assert sorted(r for _h, r in reasons) == ["hard_bounce", "spam_complaint"]


@pytest.mark.parametrize("resubscribed_last", [True, False])
def test_an_unsubscribe_and_a_resubscribe_in_one_batch_count_in_time_order(
    webhook, dbsession, sent, resubscribed_last
):
    topic, (ann, _bob), deliveries = sent
    t = int(time.time())
    leave = event("group_unsubscribe", deliveries[ann.id], ann, timestamp=t - 20)
    back = event("group_resubscribe", deliveries[ann.id], ann, timestamp=t - 10)
    if not resubscribed_last:
        leave["timestamp"], back["timestamp"] = t - 10, t - 20
    post(webhook, [back, leave])  # listed in the other order: the timestamps decide

    field = f"topic.{topic.key}"
    if resubscribed_last:
        assert subscription_of(dbsession, ann, topic) == "subscribed"
        assert [(f, b, a) for f, b, a, *_ in ledger_of(dbsession, ann, "topic.")] == [
            (field, "subscribed", "unsubscribed"),
            (field, "unsubscribed", "subscribed"),
        ]
    else:
        # Resubscribing while subscribed changes nothing: no ledger row for it.
        assert subscription_of(dbsession, ann, topic) == "unsubscribed"
        assert [(f, b, a) for f, b, a, *_ in ledger_of(dbsession, ann, "topic.")] == [
            (field, "subscribed", "unsubscribed")
        ]


def test_changes_that_change_nothing_write_no_ledger_row(webhook, dbsession, sent):
    _topic, (ann, _bob), deliveries = sent
    post(webhook, [event("spamreport", deliveries[ann.id], ann)])
    before = ledger_of(dbsession, ann)

    again = post(
        webhook,
        [
            event("spamreport", deliveries[ann.id], ann),
            event("unsubscribe", deliveries[ann.id], ann),
        ],
    ).json
    # The unsubscribe did change the topic; the second spam report changed nothing.
    after = ledger_of(dbsession, ann)
    assert again["consent_changes"] == 1
    assert [row for row in after if row not in before] == [
        (f"topic.{_topic.key}", "subscribed", "unsubscribed", "provider", "sendgrid")
    ]
    third = post(webhook, [event("unsubscribe", deliveries[ann.id], ann)]).json
    assert third["consent_changes"] == 0
    assert ledger_of(dbsession, ann) == after


def test_a_failure_before_any_sign_of_delivery_fails_it_one_after_does_not(
    webhook, dbsession, sent
):
    _topic, (ann, bob), deliveries = sent
    t = int(time.time())
    bounce = {"type": "bounce", "reason": "550 no such user"}
    post(
        webhook,
        [
            event("open", deliveries[ann.id], ann, timestamp=t - 5),
            event("bounce", deliveries[ann.id], ann, timestamp=t - 10, **bounce),
            event("bounce", deliveries[bob.id], bob, timestamp=t - 5, **bounce),
            event("open", deliveries[bob.id], bob, timestamp=t - 10),
        ],
    )

    assert status_of(dbsession, deliveries[ann.id]).status == "failed"
    assert status_of(dbsession, deliveries[bob.id]).status == "opened"


def test_provider_changes_are_announced_to_webhook_endpoints(webhook, dbsession, sent):
    from prefcenter.models import WebhookDelivery
    from prefcenter.services import webhooks
    from tests.factories import make_api_key

    _topic, (ann, _bob), deliveries = sent
    key, _plaintext = make_api_key(dbsession, scopes=("preferences:read",))
    webhooks.register_endpoint(dbsession, key, "https://loyalty.example.com/hook")

    post(webhook, [event("spamreport", deliveries[ann.id], ann)])

    dbsession.expire_all()
    (announced,) = dbsession.scalars(sa.select(WebhookDelivery)).all()
    assert announced.event == "customer.unsubscribed"
    assert announced.payload["customer"]["id"] == str(ann.id)
    assert announced.payload["changes"] == [
        {"field": "consent.email", "before": "granted", "after": "refused"}
    ]
