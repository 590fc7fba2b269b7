"""A campaign end to end, embedded mode: launch, scheduler pass, StubBroker, worker, outbox."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import dramatiq
import pytest
import sqlalchemy as sa
from dramatiq.brokers.stub import StubBroker
from sqlalchemy.orm import Session

from campaigns import services
from campaigns import tasks as campaign_tasks
from campaigns.models import Delivery, OutboxMessage
from prefcenter import tasks
from prefcenter.broker import use_broker
from prefcenter.db import make_engine
from prefcenter.migrate import upgrade
from prefcenter.models import utcnow
from tests.conftest import TEST_SECRET, create_test_database
from tests.factories import make_topic
from tests.fakes.sendgrid import FakeSendGrid, fake_sendgrid
from tests.policy_builders import KEY, consent, reachable_customer

AT = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def extra_settings() -> dict[str, str]:
    return {}


@pytest.fixture(params=["sqlite", "postgresql"])
def flow(request, tmp_path_factory, extra_settings) -> Iterator[tuple[sa.Engine, StubBroker]]:
    db = create_test_database(request.param, tmp_path_factory)
    upgrade(db.url)
    tasks.configure(
        {
            "sqlalchemy.url": db.url,
            "prefcenter.secret": TEST_SECRET,
            "prefcenter.address_hmac_key": KEY.decode(),
            "prefcenter.public_url": "https://prefs.example.com",
            "prefcenter.email.from": "Maison <bonjour@example.com>",
            **extra_settings,
        }
    )
    broker = StubBroker()
    broker.emit_after("process_boot")
    use_broker(broker)
    engine = make_engine(db.url)
    try:
        yield engine, broker
    finally:
        engine.dispose()
        tasks.dispose()
        db.drop()


def run_workers(broker: StubBroker) -> None:
    """A worker consumes everything enqueued so far, then stops."""
    worker = dramatiq.Worker(broker, worker_threads=2)
    worker.start()
    try:
        broker.join("campaigns", fail_fast=True)
        worker.join()
    finally:
        worker.stop()


def test_a_launched_campaign_reaches_the_outbox_once(flow):
    engine, broker = flow
    with Session(engine) as session:
        topic = make_topic(session, key="offers")
        people = [reachable_customer(session, topic) for _ in range(3)]
        opted_out = people[2]
        campaign = services.create_campaign(
            session,
            {
                "name": "Spring sale",
                "topic": "offers",
                "channels": ["email"],
                "content": {"email": {"fr": {"subject": "Soldes", "text": "{{ portal_url }}"}}},
            },
        )
        services.launch(session, campaign, AT, campaign_tasks._launch_settings())
        # Refused after planning, before dispatch: this message must not go.
        consent(session, opted_out, "email").status = "refused"
        session.commit()
        campaign_id, opted_out_id = campaign.id, opted_out.id

    assert campaign_tasks.tick(AT) == 3
    run_workers(broker)
    assert campaign_tasks.tick(AT) == 0  # nothing left to queue: the campaign is complete

    with Session(engine) as session:
        statuses = dict(
            session.execute(
                sa.select(Delivery.customer_id, Delivery.status).where(
                    Delivery.campaign_id == campaign_id
                )
            ).all()
        )
        ids = [str(i) for i in session.scalars(sa.select(Delivery.id))]
        outbox = session.scalars(sa.select(OutboxMessage)).all()
    assert sorted(statuses.values()) == ["sent", "sent", "skipped"]
    assert statuses[opted_out_id] == "skipped"
    assert len(outbox) == 2
    assert all(m.body_text.startswith("https://prefs.example.com/p/") for m in outbox)

    # The same broker message delivered again (a redelivery) sends nothing more.
    campaign_tasks.dispatch_deliveries.send(ids)
    run_workers(broker)
    with Session(engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(OutboxMessage)) == 2
        assert services.get_campaign(session, campaign_id).status == "completed"


# -- through SendGrid (the real client, the fake server) -----------------------------------


def launch_for(engine: sa.Engine, customers: int) -> list[str]:
    with Session(engine) as session:
        topic = make_topic(session, key="offers")
        for _ in range(customers):
            reachable_customer(session, topic)
        campaign = services.create_campaign(
            session,
            {
                "name": "Spring sale",
                "topic": "offers",
                "channels": ["email"],
                "content": {"email": {"fr": {"subject": "Soldes", "text": "Bonjour"}}},
            },
        )
        services.launch(session, campaign, AT, campaign_tasks._launch_settings())
        session.commit()
    campaign_tasks.tick(AT)
    with Session(engine) as session:
        return [str(i) for i in session.scalars(sa.select(Delivery.id))]


def statuses(engine: sa.Engine) -> list[str]:
    with Session(engine) as session:
        return sorted(session.scalars(sa.select(Delivery.status)))


class WorkerKilled(BaseException):
    """Stands for the process dying: not an Exception, so nothing catches it."""


class TestThroughSendGrid:
    """The real `sendgrid` client against the fake server, as production runs it."""

    @pytest.fixture
    def sendgrid_fake(self) -> Iterator[FakeSendGrid]:
        with fake_sendgrid(api_key="SG.flow-test") as fake:
            yield fake

    @pytest.fixture
    def extra_settings(self, sendgrid_fake) -> dict[str, str]:
        return {
            "prefcenter.email.transport": "sendgrid",
            "sendgrid.api_key": "SG.flow-test",
            "sendgrid.host": sendgrid_fake.url,
        }

    def test_a_redelivered_batch_is_not_sent_twice(self, flow, sendgrid_fake):
        engine, broker = flow
        launch_for(engine, 3)
        run_workers(broker)
        assert statuses(engine) == ["sent"] * 3

        ids = [str(i) for i in _all_delivery_ids(engine)]
        # The same broker message redelivered, twice, in this process: nothing more goes out.
        campaign_tasks.dispatch_deliveries(ids)
        campaign_tasks.dispatch_deliveries(ids)

        assert len(sendgrid_fake.personalizations()) == 3
        body = sendgrid_fake.calls[0].body
        assert {p["custom_args"]["delivery_id"] for p in body["personalizations"]} == set(ids)

    def test_a_worker_killed_during_the_call_never_sends_again(
        self, flow, sendgrid_fake, monkeypatch
    ):
        engine, _broker = flow
        ids = launch_for(engine, 2)
        real_send = campaign_tasks._dispatcher().transports["email"].send

        def accepted_then_killed(session, messages):
            real_send(session, messages)  # SendGrid accepted them...
            raise WorkerKilled  # ...and the worker died before recording it

        monkeypatch.setattr(
            campaign_tasks._dispatcher().transports["email"], "send", accepted_then_killed
        )
        with pytest.raises(WorkerKilled):
            campaign_tasks.dispatch_deliveries(ids)
        monkeypatch.undo()
        assert statuses(engine) == ["sending", "sending"]

        campaign_tasks.dispatch_deliveries(ids)  # redelivered after the crash
        # The sweeper re-queues only ``queued`` deliveries: nothing here to resend.
        campaign_tasks.tick(utcnow() + dt.timedelta(minutes=20))
        assert len(sendgrid_fake.personalizations()) == 2
        campaign_tasks.tick(utcnow() + dt.timedelta(hours=2))
        assert statuses(engine) == ["failed", "failed"]  # reported, not sent twice


def _all_delivery_ids(engine: sa.Engine) -> list[uuid.UUID]:
    with Session(engine) as session:
        return list(session.scalars(sa.select(Delivery.id)))
