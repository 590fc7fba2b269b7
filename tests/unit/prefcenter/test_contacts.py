"""Reservations: caps count what is reserved, and reserving is atomic."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from prefcenter import policy
from prefcenter.models import ContactLogEntry, Customer, Topic
from prefcenter.services import contacts
from tests.concurrency import run_together
from tests.factories import make_topic
from tests.policy_builders import consent, reachable_customer, settings

AT = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
CFG = settings()


def message(topic, ref, channels=("email", "sms")):
    return policy.Message.for_topic(topic, channels, message_ref=ref)


def log_rows(session, ref):
    return session.execute(
        sa.select(ContactLogEntry.customer_id, ContactLogEntry.channel, ContactLogEntry.at)
        .where(ContactLogEntry.message_ref == ref)
        .order_by(ContactLogEntry.at)
    ).all()


@pytest.fixture
def topic(dbsession):
    return make_topic(dbsession, key="offers")


def test_reserve_audience_reserves_sends_and_deferrals_only(dbsession, topic):
    now = reachable_customer(dbsession, topic, order="sms")
    tonight = reachable_customer(dbsession, topic, hours=(18 * 60, 21 * 60))
    refused = reachable_customer(dbsession, topic)
    consent(dbsession, refused, "email").status = "refused"
    consent(dbsession, refused, "sms").status = "refused"
    ids = [now.id, tonight.id, refused.id]
    candidates = sa.select(Customer.id).where(Customer.id.in_(ids))

    reserved = contacts.reserve_audience(dbsession, message(topic, "c:1"), candidates, AT, cfg=CFG)

    assert reserved.by_channel == {"sms": 1, "email": 1}
    assert reserved.deferred == 1
    rows = {r.customer_id: (r.channel, r.at) for r in log_rows(dbsession, "c:1")}
    assert rows == {
        now.id: ("sms", AT),
        tonight.id: ("email", dt.datetime(2026, 11, 23, 17, 0, tzinfo=dt.UTC)),
    }


def test_reserving_the_same_message_twice_adds_nothing(dbsession, topic):
    customer = reachable_customer(dbsession, topic, frequency="weekly")
    candidates = sa.select(Customer.id).where(Customer.id == customer.id)
    first = contacts.reserve_audience(dbsession, message(topic, "c:1"), candidates, AT, cfg=CFG)
    again = contacts.reserve_audience(dbsession, message(topic, "c:1"), candidates, AT, cfg=CFG)
    assert first.total == again.total == 1
    assert len(log_rows(dbsession, "c:1")) == 1


def test_a_reservation_caps_the_next_message(dbsession, topic):
    customer = reachable_customer(dbsession, topic, frequency="weekly")
    candidates = sa.select(Customer.id).where(Customer.id == customer.id)
    contacts.reserve_audience(dbsession, message(topic, "c:1"), candidates, AT, cfg=CFG)
    second = contacts.reserve_audience(
        dbsession, message(topic, "c:2"), candidates, AT + dt.timedelta(days=2), cfg=CFG
    )
    assert second.total == 0
    decision = policy.choose(dbsession, customer, message(topic, "c:2"), AT, cfg=CFG)
    assert decision.reason == "frequency_cap"


def test_reserve_one_is_idempotent_and_released_contacts_stop_counting(dbsession, topic):
    customer = reachable_customer(dbsession, topic, frequency="weekly")
    first = contacts.reserve(dbsession, customer, message(topic, "a:1"), AT, cfg=CFG)
    assert first == policy.Decision("send", "email")
    assert contacts.reserve(dbsession, customer, message(topic, "a:1"), AT, cfg=CFG) == first
    assert len(log_rows(dbsession, "a:1")) == 1

    blocked = contacts.reserve(dbsession, customer, message(topic, "a:2"), AT, cfg=CFG)
    assert blocked.reason == "frequency_cap"
    assert log_rows(dbsession, "a:2") == []

    assert contacts.release(dbsession, customer.id, "a:1")
    assert contacts.reserve(dbsession, customer, message(topic, "a:2"), AT, cfg=CFG).contacts


def test_mark_sent_keeps_the_contact_counting_at_the_real_time(dbsession, topic):
    customer = reachable_customer(dbsession, topic)
    contacts.reserve(dbsession, customer, message(topic, "a:1"), AT, cfg=CFG)
    later = AT + dt.timedelta(minutes=5)
    assert contacts.mark_sent(dbsession, customer.id, "a:1", later)
    assert not contacts.mark_sent(dbsession, customer.id, "a:1", later)  # only once
    assert not contacts.release(dbsession, customer.id, "a:1")  # sent stays sent
    entry = dbsession.scalar(sa.select(ContactLogEntry).where(ContactLogEntry.message_ref == "a:1"))
    dbsession.refresh(entry)
    assert (entry.status, entry.at) == ("sent", later)


def test_a_reservation_needs_a_message_ref(dbsession, topic):
    customer = reachable_customer(dbsession, topic)
    with pytest.raises(ValueError, match="message_ref"):
        contacts.reserve(dbsession, customer, message(topic, None), AT, cfg=CFG)


# -- concurrency: real transactions on separate connections


@pytest.fixture
def committed_population(engine):
    """Customers committed for real (threads need separate transactions); removed after."""
    marker = uuid.uuid4().hex[:8]
    with Session(engine) as session:
        topic = make_topic(session, key=f"conc_{marker}")
        customers = [
            reachable_customer(session, topic, frequency="weekly", external_id=f"{marker}-{i}")
            for i in range(20)
        ]
        session.commit()
        ids = [c.id for c in customers]
        topic_id = topic.id
    yield topic_id, ids
    with Session(engine) as session:
        session.execute(sa.delete(Customer).where(Customer.id.in_(ids)))
        session.execute(sa.delete(ContactLogEntry).where(ContactLogEntry.topic_id == topic_id))
        session.execute(sa.delete(Topic).where(Topic.id == topic_id))
        session.commit()


def test_concurrent_planners_never_exceed_a_cap(engine, committed_population):
    topic_id, ids = committed_population
    planners = 6

    def plan(n: int) -> None:
        # All start together; on SQLite the first transaction then holds the write lock.
        with Session(engine) as session:
            topic = session.get(Topic, topic_id)
            candidates = sa.select(Customer.id).where(Customer.id.in_(ids))
            contacts.reserve_audience(session, message(topic, f"conc:{n}"), candidates, AT, cfg=CFG)
            session.commit()

    run_together(plan, range(planners))

    with Session(engine) as session:
        per_customer = dict(
            session.execute(
                sa.select(ContactLogEntry.customer_id, sa.func.count())
                .where(ContactLogEntry.topic_id == topic_id)
                .group_by(ContactLogEntry.customer_id)
            ).all()
        )
    # Weekly cadence: every customer got exactly one of the six campaigns, never two.
    assert per_customer == {customer_id: 1 for customer_id in ids}


def test_new_ids_are_unique_and_on_postgresql_time_ordered_v7_in_insert_order(dbsession):
    for n in range(7):
        dbsession.add(Customer(external_id=f"ID-{n}", locale="fr", timezone="Europe/Paris"))
    dbsession.flush()
    order = Customer.external_id.desc()
    before = dt.datetime.now(dt.UTC)
    first, second = (
        dbsession.execute(
            sa.select(Customer.external_id, contacts.new_id(dbsession, order)).order_by(order)
        ).all()
        for _ in range(2)
    )
    ids = [uuid.UUID(str(i)) for _e, i in first + second]
    assert len(set(ids)) == 14  # unique within a statement and across statements
    if dbsession.get_bind().dialect.name != "postgresql":
        return
    for id_ in ids:
        assert (id_.version, id_.variant) == (7, uuid.RFC_4122)
        millis = int.from_bytes(id_.bytes[:6], "big")
        stamped = dt.datetime.fromtimestamp(millis / 1000, dt.UTC)
        assert before - dt.timedelta(seconds=1) <= stamped <= dt.datetime.now(dt.UTC)
    for rows in (first, second):
        # In the statement's row order: increasing, so they land at the index's end in order.
        assert [r.external_id for r in rows] == [f"ID-{n}" for n in reversed(range(7))]
        assert [uuid.UUID(str(i)) for _e, i in rows] == sorted(uuid.UUID(str(i)) for _e, i in rows)
