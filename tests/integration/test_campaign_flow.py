"""A campaign end to end, embedded mode: launch, scheduler pass, StubBroker, worker, outbox."""

from __future__ import annotations

import datetime as dt
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
from tests.conftest import TEST_SECRET, create_test_database
from tests.factories import make_topic
from tests.policy_builders import KEY, consent, reachable_customer

AT = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def flow(request, tmp_path_factory) -> Iterator[tuple[sa.Engine, StubBroker]]:
    db = create_test_database(request.param, tmp_path_factory)
    upgrade(db.url)
    tasks.configure(
        {
            "sqlalchemy.url": db.url,
            "prefcenter.secret": TEST_SECRET,
            "prefcenter.address_hmac_key": KEY.decode(),
            "prefcenter.public_url": "https://prefs.example.com",
            "prefcenter.email.from": "Maison <bonjour@example.com>",
        }
    )
    broker = StubBroker()
    broker.emit_after("process_boot")
    use_broker(broker)
    worker = dramatiq.Worker(broker, worker_threads=2)
    worker.start()
    engine = make_engine(db.url)
    try:
        yield engine, broker
    finally:
        worker.stop()
        engine.dispose()
        tasks.dispose()
        db.drop()


def run_workers(broker: StubBroker) -> None:
    broker.join("campaigns", fail_fast=True)


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
