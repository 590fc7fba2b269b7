"""Webhooks end to end: a preference change through the API, the outbox row written in the
same transaction, the actor enqueued after commit, a signed POST to a local receiver,
retries after a 500 and never a second send of one change."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator

import dramatiq
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from prefcenter import tasks
from prefcenter.db import make_session_factory
from prefcenter.models import WebhookDelivery
from prefcenter.services import webhooks
from tests.conftest import TEST_SECRET, wsgi_app
from tests.factories import make_api_key, make_customer
from tests.fakes.webhook_receiver import webhook_receiver

PROOF = {"source": "app", "collected_at": "2026-01-10T10:00:00+01:00"}


@pytest.fixture
def app(connection: sa.Connection, broker):
    """The local receiver listens on 127.0.0.1: allowed here as in development only."""
    return wsgi_app(connection, broker, **{"prefcenter.webhooks.allow_private_targets": "true"})


@pytest.fixture
def admin(dbsession) -> dict[str, str]:
    _key, plaintext = make_api_key(dbsession, scopes=("admin", "preferences:write", "gdpr"))
    return {"Authorization": f"Bearer {plaintext}"}


@pytest.fixture
def unit_of_work(connection: sa.Connection):
    """Short transactions on the test's connection, as the actor's unit_of_work makes."""

    @contextlib.contextmanager
    def make() -> Iterator[Session]:
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        try:
            yield session
            session.commit()
        except Exception:
            session.rollback()
            raise
        finally:
            session.close()

    return make


def _register(testapp, admin, url: str, events: list[str] | None = None) -> dict:
    body = {"url": url} | ({"events": events} if events else {})
    return testapp.post_json("/api/v1/webhooks", body, headers=admin, status=201).json


def _deliveries(dbsession: Session, endpoint_id: str) -> list[WebhookDelivery]:
    dbsession.expire_all()
    return list(
        dbsession.scalars(
            sa.select(WebhookDelivery).where(WebhookDelivery.endpoint_id == uuid.UUID(endpoint_id))
        )
    )


def _verify(secret: str, received) -> dict:
    timestamp = received.headers["X-Prefcenter-Timestamp"]
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + received.body, hashlib.sha256
    ).hexdigest()
    assert received.headers["X-Prefcenter-Signature"] == f"v1={expected}"
    return json.loads(received.body)


def test_one_change_is_one_signed_delivery_retried_after_a_500_and_never_sent_twice(
    testapp, admin, dbsession, broker, unit_of_work
) -> None:
    customer = make_customer(dbsession, external_id="W-1", email="w1@example.com")
    with webhook_receiver(statuses=[500, 200]) as receiver:
        endpoint = _register(testapp, admin, receiver.url)
        testapp.patch_json(
            "/api/v1/customers/W-1/preferences",
            {
                "channels": {"email": {"status": "granted", "proof": PROOF}},
                "frequency": "weekly",
            },
            headers=admin,
        )
        (delivery,) = _deliveries(dbsession, endpoint["id"])  # one event for the transaction
        assert delivery.event == "preference.changed"
        assert delivery.payload["customer"] == {"id": str(customer.id), "external_id": "W-1"}
        assert {c["field"] for c in delivery.payload["changes"]} == {"consent.email", "frequency"}
        # Enqueued after commit, carrying only the delivery id.
        (message,) = broker.queues["default"].queue
        assert json.loads(message)["args"] == [str(delivery.id)]

        now = dt.datetime.now(dt.UTC)
        first = webhooks.attempt_delivery(
            unit_of_work, delivery.id, server_secret=TEST_SECRET, allow_private=True, now=now
        )
        assert (first.sent, first.status_code) == (False, 500)
        assert first.retry_at == now + dt.timedelta(seconds=webhooks.BACKOFF_SECONDS)
        (row,) = _deliveries(dbsession, endpoint["id"])
        assert (row.status, row.attempts, row.last_status_code) == ("pending", 1, 500)
        assert row.next_attempt_at == first.retry_at

        # Not due yet: nothing is sent.
        early = webhooks.attempt_delivery(
            unit_of_work, delivery.id, server_secret=TEST_SECRET, allow_private=True, now=now
        )
        assert early.sent is False and len(receiver.received) == 1

        second = webhooks.attempt_delivery(
            unit_of_work,
            delivery.id,
            server_secret=TEST_SECRET,
            allow_private=True,
            now=first.retry_at,
        )
        assert second.sent is True
        again = webhooks.attempt_delivery(
            unit_of_work,
            delivery.id,
            server_secret=TEST_SECRET,
            allow_private=True,
            now=first.retry_at + dt.timedelta(days=1),
        )
        assert again.sent is False

    assert len(receiver.received) == 2
    assert receiver.received[0].body == receiver.received[1].body
    payload = _verify(endpoint["secret"], receiver.received[1])
    assert payload["type"] == "preference.changed"
    assert payload["id"] == delivery.event_id
    (row,) = _deliveries(dbsession, endpoint["id"])
    assert (row.status, row.attempts, row.last_status_code) == ("sent", 2, 200)
    assert row.sent_at is not None


def test_the_actor_sends_through_the_broker_once_even_if_the_message_is_duplicated(
    testapp, admin, dbsession, broker, connection
) -> None:
    make_customer(dbsession, external_id="W-2", email="w2@example.com")
    tasks.use_session_factory(make_session_factory(connection))
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    try:
        with webhook_receiver() as receiver:
            endpoint = _register(testapp, admin, receiver.url)
            testapp.patch_json(
                "/api/v1/customers/W-2/preferences", {"frequency": "monthly"}, headers=admin
            )
            (delivery,) = _deliveries(dbsession, endpoint["id"])
            webhooks.enqueue([delivery.id])  # a duplicated broker message
            worker.start()
            broker.join("default", fail_fast=True)
            worker.join()
        assert len(receiver.received) == 1
        _verify(endpoint["secret"], receiver.received[0])
        (row,) = _deliveries(dbsession, endpoint["id"])
        assert row.status == "sent"
    finally:
        worker.stop()
        tasks.dispose()


def test_a_rejected_request_announces_nothing(testapp, admin, dbsession, broker) -> None:
    make_customer(dbsession, external_id="W-3", email="w3@example.com")
    endpoint = _register(testapp, admin, "http://127.0.0.1:9/never")
    testapp.patch_json(
        "/api/v1/customers/W-3/preferences",
        {"frequency": "weekly", "timezone": "Nowhere/Atlantis"},
        headers=admin,
        status=422,
    )
    assert _deliveries(dbsession, endpoint["id"]) == []
    assert broker.queues["default"].qsize() == 0


def test_events_are_unsubscribed_and_erased_and_endpoints_choose_theirs(
    testapp, admin, dbsession
) -> None:
    make_customer(dbsession, external_id="W-4", email="w4@example.com")
    everything = _register(testapp, admin, "http://127.0.0.1:9/all")
    erasures = _register(testapp, admin, "http://127.0.0.1:9/erased", ["customer.erased"])
    testapp.patch_json(
        "/api/v1/customers/W-4/preferences",
        {"channels": {"email": {"status": "refused"}}},
        headers=admin,
    )
    testapp.delete("/api/v1/customers/W-4", headers=admin, status=204)
    events = sorted(d.event for d in _deliveries(dbsession, everything["id"]))
    assert events == ["customer.erased", "customer.unsubscribed"]
    assert [d.event for d in _deliveries(dbsession, erasures["id"])] == ["customer.erased"]


def test_back_off_doubles_and_is_capped() -> None:
    assert webhooks.backoff(1) == dt.timedelta(seconds=30)
    assert webhooks.backoff(2) == dt.timedelta(seconds=60)
    assert webhooks.backoff(30) == dt.timedelta(seconds=webhooks.MAX_BACKOFF_SECONDS)


def test_a_delivery_gives_up_after_the_last_attempt(
    testapp, admin, dbsession, unit_of_work, monkeypatch
) -> None:
    monkeypatch.setattr(webhooks, "MAX_ATTEMPTS", 1)
    make_customer(dbsession, external_id="W-5", email="w5@example.com")
    with webhook_receiver(statuses=[503]) as receiver:
        endpoint = _register(testapp, admin, receiver.url)
        testapp.patch_json(
            "/api/v1/customers/W-5/preferences", {"frequency": "weekly"}, headers=admin
        )
        (delivery,) = _deliveries(dbsession, endpoint["id"])
        result = webhooks.attempt_delivery(
            unit_of_work, delivery.id, server_secret=TEST_SECRET, allow_private=True
        )
    assert result.retry_at is None
    (row,) = _deliveries(dbsession, endpoint["id"])
    assert (row.status, row.last_status_code) == ("failed", 503)
