"""Signature checks against SendGrid's own published test vector (sendgrid-python's tests)."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import psycopg.errors
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from campaigns import events
from campaigns.models import Campaign, Delivery, ProviderEvent
from prefcenter.consent_settings import ConsentSettings
from prefcenter.models import Customer, Interaction, Topic
from tests.campaign_builders import make_campaign
from tests.concurrency import run_together
from tests.factories import make_customer, make_topic

# The vector published with the sendgrid library's event webhook tests: a real SendGrid
# verification key, and a batch it signed (note the trailing CRLF, part of the body).
PUBLIC_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw"
    "+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
)
SIGNATURE = (
    "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluL"
    "tEZtM="
)
TIMESTAMP = "1600112502"
BODY = (
    json.dumps(
        [
            {
                "email": "hello@world.com",
                "event": "dropped",
                "reason": "Bounced Address",
                "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
                "sg_message_id": "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-"
                "5F5FC76C-9.0",
                "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>",
                "timestamp": 1600112492,
            }
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    + "\r\n"
).encode()
SIGNED_AT = dt.datetime.fromtimestamp(int(TIMESTAMP), dt.UTC)
SETTINGS = events.WebhookSettings(PUBLIC_KEY)


def test_sendgrid_s_own_signed_batch_verifies_and_is_a_hard_failure():
    events.verify(SETTINGS, BODY, SIGNATURE, TIMESTAMP, SIGNED_AT + dt.timedelta(seconds=30))

    (event,) = events.parse(BODY)
    assert events._is_hard_failure(event)


@pytest.mark.parametrize(
    ("body", "signature", "timestamp", "now", "why"),
    [
        (BODY.replace(b"dropped", b"delivrd"), SIGNATURE, TIMESTAMP, SIGNED_AT, "does not match"),
        (BODY, SIGNATURE, "1600112503", SIGNED_AT, "does not match"),
        (BODY, "not base64!", TIMESTAMP, SIGNED_AT, "does not match"),
        (BODY, SIGNATURE, "yesterday", SIGNED_AT, "is not a Unix time"),
        (BODY, None, TIMESTAMP, SIGNED_AT, "headers are missing"),
        (BODY, SIGNATURE, TIMESTAMP, SIGNED_AT + dt.timedelta(hours=1), "outside the accepted"),
    ],
)
def test_anything_else_is_rejected_with_the_reason(body, signature, timestamp, now, why):
    with pytest.raises(events.Rejected, match=why):
        events.verify(SETTINGS, body, signature, timestamp, now)


def test_without_a_configured_key_every_request_is_rejected():
    with pytest.raises(events.Rejected, match="no verification key"):
        events.verify(events.WebhookSettings(None), BODY, SIGNATURE, TIMESTAMP, SIGNED_AT)


def test_another_key_does_not_verify_sendgrid_s_signature():
    other = events.WebhookSettings(
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REn"
        "tlo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA=="
    )
    with pytest.raises(events.Rejected, match="does not match"):
        events.verify(other, BODY, SIGNATURE, TIMESTAMP, SIGNED_AT)


# -- concurrent batches ------------------------------------------------------------------

AT = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def sent_deliveries(engine):
    """Committed sent deliveries (threads need their own transactions), removed after."""
    marker = uuid.uuid4().hex[:8]
    with Session(engine) as session:
        topic = make_topic(session, key=f"events_{marker}")
        campaign = make_campaign(session, topic, channels=("email",))
        customers = [
            make_customer(session, external_id=f"{marker}-{i}", email=f"c{i}-{marker}@example.com")
            for i in range(100)
        ]
        deliveries = [
            Delivery(
                campaign_id=campaign.id,
                customer_id=c.id,
                channel="email",
                status="sent",
                sent_at=AT,
            )
            for c in customers
        ]
        session.add_all(deliveries)
        session.commit()
        ids = [d.id for d in deliveries]
        customer_ids, campaign_id, topic_id = [c.id for c in customers], campaign.id, topic.id
    yield [str(i) for i in ids]
    with Session(engine) as session:
        session.execute(sa.delete(ProviderEvent).where(ProviderEvent.delivery_id.in_(ids)))
        session.execute(sa.delete(Delivery).where(Delivery.campaign_id == campaign_id))
        session.execute(sa.delete(Interaction).where(Interaction.customer_id.in_(customer_ids)))
        session.execute(sa.delete(Customer).where(Customer.id.in_(customer_ids)))
        session.execute(sa.delete(Campaign).where(Campaign.id == campaign_id))
        session.execute(sa.delete(Topic).where(Topic.id == topic_id))
        session.commit()


def _event(delivery_id: str, kind: str, n: int, marker: str) -> dict:
    return {
        "sg_event_id": f"{marker}-{kind}-{n}",
        "event": kind,
        "delivery_id": delivery_id,
        "email": "someone@example.com",
        "timestamp": int(AT.timestamp()) + 60 + n,
    }


def test_concurrent_batches_over_the_same_deliveries_apply_every_event_once(
    engine, sent_deliveries
):
    """SendGrid posts batches at the same time; here two, over the same deliveries in
    opposite orders, sharing some events (a retry), round after round: neither fails
    (no deadlock surfaces) and each event counts once."""
    cfg = ConsentSettings(address_key=b"events-test-key-0123456789abcdef")
    rounds = 5

    def post(batch: list[dict]) -> None:
        with Session(engine) as session:
            events.ingest_retrying(session, batch, AT + dt.timedelta(hours=1), cfg=cfg)
            session.commit()

    for round_ in range(rounds):
        marker = f"r{round_}-{uuid.uuid4().hex[:6]}"
        first = [_event(d, "delivered", i, marker) for i, d in enumerate(sent_deliveries)]
        first += [_event(d, "open", i, marker) for i, d in enumerate(sent_deliveries)]
        second = [_event(d, "click", i, marker) for i, d in enumerate(sent_deliveries)][::-1]
        second += first[:10]  # the same events again, in the other batch
        run_together(post, [first, second])

    with Session(engine) as session:
        statuses = session.scalars(
            sa.select(Delivery.status).where(
                Delivery.id.in_([uuid.UUID(i) for i in sent_deliveries])
            )
        ).all()
        recorded = session.scalar(
            sa.select(sa.func.count())
            .select_from(ProviderEvent)
            .where(ProviderEvent.delivery_id.in_([uuid.UUID(i) for i in sent_deliveries]))
        )
        engagements = session.scalar(
            sa.select(sa.func.count())
            .select_from(Interaction)
            .where(Interaction.source == "sendgrid", Interaction.idempotency_key.like("r%-%"))
            .where(
                Interaction.customer_id.in_(
                    sa.select(Delivery.customer_id).where(
                        Delivery.id.in_([uuid.UUID(i) for i in sent_deliveries])
                    )
                )
            )
        )
    n = len(sent_deliveries)
    assert statuses == ["clicked"] * n
    assert recorded == rounds * 3 * n  # delivered, open, click per delivery and round
    assert engagements == rounds * 2 * n  # the opens and the clicks, once each


def _deadlock() -> sa.exc.OperationalError:
    return sa.exc.OperationalError(
        "UPDATE deliveries …", {}, psycopg.errors.DeadlockDetected("deadlock detected")
    )


@pytest.mark.parametrize(
    ("error", "attempts"),
    [(_deadlock, 2), (lambda: sa.exc.IntegrityError("INSERT …", {}, ValueError("no")), 1)],
    ids=["deadlock: applied again", "anything else: raised at once"],
)
def test_a_batch_that_meets_a_deadlock_is_undone_and_applied_again(
    engine, sent_deliveries, monkeypatch, error, attempts
):
    real, calls = events.ingest, []

    def failing_once(session, batch, now, *, cfg):
        calls.append(real(session, batch, now, cfg=cfg))  # the work done, then the failure
        if len(calls) == 1:
            raise error()
        return calls[-1]

    monkeypatch.setattr(events, "ingest", failing_once)
    batch = [_event(d, "click", i, "retry") for i, d in enumerate(sent_deliveries)]
    cfg = ConsentSettings(address_key=b"events-test-key-0123456789abcdef")
    ids = [uuid.UUID(i) for i in sent_deliveries]
    with Session(engine) as session:
        if attempts == 1:
            with pytest.raises(sa.exc.IntegrityError):
                events.ingest_retrying(session, batch, AT + dt.timedelta(hours=1), cfg=cfg)
            session.rollback()
        else:
            result = events.ingest_retrying(session, batch, AT + dt.timedelta(hours=1), cfg=cfg)
            session.commit()
            assert result.new == len(batch)  # the first attempt left nothing behind
        recorded = session.scalar(
            sa.select(sa.func.count())
            .select_from(ProviderEvent)
            .where(ProviderEvent.delivery_id.in_(ids))
        )
    assert len(calls) == attempts
    assert recorded == (len(batch) if attempts == 2 else 0)
