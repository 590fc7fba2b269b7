"""Planning a campaign: deliveries and reservations written set-based under the policy."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from campaigns import planner
from campaigns.models import Campaign, Delivery
from prefcenter.models import ContactLogEntry, Customer, Topic
from tests.campaign_builders import among, make_campaign
from tests.factories import make_topic
from tests.policy_builders import consent, log_contact, reachable_customer, settings

# A Monday 10:00 in Paris (09:00 UTC): inside the default window.
AT = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
CFG = settings()


@pytest.fixture
def topic(dbsession):
    return make_topic(dbsession, key="offers")


def deliveries(session, campaign) -> dict:
    rows = session.execute(
        sa.select(
            Delivery.customer_id,
            Delivery.channel,
            Delivery.status,
            Delivery.reason,
            Delivery.scheduled_at,
        ).where(Delivery.campaign_id == campaign.id)
    ).all()
    return {row.customer_id: row for row in rows}


def test_each_candidate_gets_one_delivery_with_the_policy_decision(dbsession, topic):
    sends = reachable_customer(dbsession, topic)
    refused = reachable_customer(dbsession, topic)
    consent(dbsession, refused, "email").status = "refused"
    consent(dbsession, refused, "sms").status = "refused"
    unsubscribed = reachable_customer(dbsession)  # not subscribed to the opt-in topic
    dbsession.flush()
    campaign = make_campaign(dbsession, topic)

    counts = planner.plan(dbsession, campaign, among(sends, refused, unsubscribed), AT, cfg=CFG)

    rows = deliveries(dbsession, campaign)
    assert (rows[sends.id].channel, rows[sends.id].status) == ("email", "planned")
    assert rows[sends.id].scheduled_at == AT
    # Email and SMS refused: no channel passes; the first channel's reason is given.
    assert (rows[refused.id].status, rows[refused.id].reason) == ("skipped", "no_consent")
    assert (rows[unsubscribed.id].status, rows[unsubscribed.id].reason) == (
        "skipped",
        "topic_unsubscribed",
    )
    assert counts.channels == {"email": 1}
    assert counts.skipped == {"no_consent": 1, "topic_unsubscribed": 1}
    assert campaign.plan_counts["audience"] == 3


def test_the_customer_s_own_channel_order_chooses_the_channel(dbsession, topic):
    prefers_sms = reachable_customer(dbsession, topic, order="sms,email")
    campaign = make_campaign(dbsession, topic)

    planner.plan(dbsession, campaign, among(prefers_sms), AT, cfg=CFG)

    assert deliveries(dbsession, campaign)[prefers_sms.id].channel == "sms"


def test_outside_contact_hours_the_delivery_waits_for_the_window_in_the_customer_s_zone(
    dbsession, topic
):
    # 09:00 UTC is 18:00 in Tokyo; this customer takes messages 08:00-12:00 local.
    tokyo = reachable_customer(dbsession, topic, timezone="Asia/Tokyo", hours=(480, 720))
    campaign = make_campaign(dbsession, topic)

    counts = planner.plan(dbsession, campaign, among(tokyo), AT, cfg=CFG)

    row = deliveries(dbsession, campaign)[tokyo.id]
    assert (row.status, row.reason) == ("deferred", "quiet_hours")
    assert row.scheduled_at == dt.datetime(2026, 3, 2, 23, 0, tzinfo=dt.UTC)  # 08:00 next day
    assert counts.deferred == 1 and counts.channels == {"email": 1}


def test_planning_reserves_the_contacts_that_later_caps_count(dbsession, topic):
    weekly = reachable_customer(dbsession, topic, frequency="weekly")
    first = make_campaign(dbsession, topic)
    second = make_campaign(dbsession, topic)

    planner.plan(dbsession, first, among(weekly), AT, cfg=CFG)
    counts = planner.plan(dbsession, second, among(weekly), AT, cfg=CFG)

    reservation = dbsession.scalars(
        sa.select(ContactLogEntry).where(ContactLogEntry.message_ref == first.message_ref)
    ).one()
    assert (reservation.customer_id, reservation.status, reservation.at) == (
        weekly.id,
        "reserved",
        AT,
    )
    assert counts.skipped == {"frequency_cap": 1}
    assert deliveries(dbsession, second)[weekly.id].reason == "frequency_cap"


def test_skipped_customers_reserve_nothing(dbsession, topic):
    unsubscribed = reachable_customer(dbsession)
    campaign = make_campaign(dbsession, topic)

    planner.plan(dbsession, campaign, among(unsubscribed), AT, cfg=CFG)

    assert not dbsession.scalars(
        sa.select(ContactLogEntry).where(ContactLogEntry.message_ref == campaign.message_ref)
    ).all()


def test_planning_twice_plans_only_new_candidates(dbsession, topic):
    first = reachable_customer(dbsession, topic)
    campaign = make_campaign(dbsession, topic)
    planner.plan(dbsession, campaign, among(first), AT, cfg=CFG)
    later = reachable_customer(dbsession, topic)

    counts = planner.plan(
        dbsession, campaign, among(first, later), AT + dt.timedelta(hours=1), cfg=CFG
    )

    assert set(deliveries(dbsession, campaign)) == {first.id, later.id}
    assert counts.channels == {"email": 2}
    reservations = dbsession.scalar(
        sa.select(sa.func.count()).where(ContactLogEntry.message_ref == campaign.message_ref)
    )
    assert reservations == 2


def test_forecast_then_plan_give_identical_counts_and_forecast_writes_nothing(dbsession, topic):
    people = [
        reachable_customer(dbsession, topic),
        reachable_customer(dbsession, topic, order="sms"),
        reachable_customer(dbsession, topic, timezone="America/New_York", hours=(540, 1200)),
        reachable_customer(dbsession, topic, frequency="monthly"),
        reachable_customer(dbsession),
    ]
    log_contact(dbsession, people[3], AT - dt.timedelta(days=3))
    campaign = make_campaign(dbsession, topic)

    forecast = planner.forecast(dbsession, campaign, among(*people), AT, cfg=CFG)
    assert dbsession.scalar(sa.select(sa.func.count()).select_from(Delivery)) == 0
    assert not dbsession.scalars(
        sa.select(ContactLogEntry).where(ContactLogEntry.message_ref == campaign.message_ref)
    ).all()
    plan = planner.plan(dbsession, campaign, among(*people), AT, cfg=CFG)

    assert forecast == plan
    assert forecast.as_dict() == {
        "audience": 5,
        "contacted": 3,
        "channels": {"email": 2, "sms": 1},
        "deferred": 1,
        "skipped": {"frequency_cap": 1, "topic_unsubscribed": 1},
    }


def test_alerts_ignore_pause_and_caps(dbsession):
    alerts = make_topic(dbsession, key="points", kind="alert", regime="opt_out")
    weekly = reachable_customer(dbsession, frequency="weekly")
    log_contact(dbsession, weekly, AT - dt.timedelta(days=1))
    campaign = make_campaign(dbsession, alerts, channels=("email",), kind="alert")

    counts = planner.plan(dbsession, campaign, among(weekly), AT, cfg=CFG)

    assert counts.channels == {"email": 1} and counts.skipped == {}


# -- two campaigns launched at the same moment (real transactions, separate connections)


@pytest.fixture
def committed_audience(engine):
    """Weekly-cadence customers committed for real (threads need their own transactions)."""
    marker = uuid.uuid4().hex[:8]
    with Session(engine) as session:
        topic = make_topic(session, key=f"plan_{marker}")
        customers = [
            reachable_customer(session, topic, frequency="weekly", external_id=f"{marker}-{i}")
            for i in range(20)
        ]
        campaigns = [make_campaign(session, topic) for _ in range(4)]
        session.commit()
        ids, campaign_ids, topic_id = [c.id for c in customers], [c.id for c in campaigns], topic.id
    yield topic_id, ids, campaign_ids
    with Session(engine) as session:
        session.execute(sa.delete(Campaign).where(Campaign.id.in_(campaign_ids)))
        session.execute(sa.delete(Customer).where(Customer.id.in_(ids)))
        session.execute(sa.delete(ContactLogEntry).where(ContactLogEntry.topic_id == topic_id))
        session.execute(sa.delete(Topic).where(Topic.id == topic_id))
        session.commit()


def test_campaigns_planned_concurrently_never_exceed_a_cap(engine, committed_audience):
    topic_id, ids, campaign_ids = committed_audience
    barrier = threading.Barrier(len(campaign_ids))
    errors: list[BaseException] = []

    def launch(campaign_id) -> None:
        try:
            barrier.wait(timeout=30)
            with Session(engine) as session:
                campaign = session.get(Campaign, campaign_id)
                candidates = sa.select(Customer.id).where(Customer.id.in_(ids))
                planner.plan(session, campaign, candidates, AT, cfg=CFG)
                session.commit()
        except BaseException as exc:  # reported below, in the test's own thread
            errors.append(exc)

    threads = [threading.Thread(target=launch, args=(c,)) for c in campaign_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors

    with Session(engine) as session:
        reserved = dict(
            session.execute(
                sa.select(ContactLogEntry.customer_id, sa.func.count())
                .where(ContactLogEntry.topic_id == topic_id)
                .group_by(ContactLogEntry.customer_id)
            ).all()
        )
        planned = session.scalar(
            sa.select(sa.func.count()).where(
                Delivery.campaign_id.in_(campaign_ids), Delivery.status == "planned"
            )
        )
        capped = session.scalar(
            sa.select(sa.func.count()).where(
                Delivery.campaign_id.in_(campaign_ids), Delivery.reason == "frequency_cap"
            )
        )
    # Weekly cadence: each customer got exactly one of the four campaigns, never two.
    assert reserved == {customer_id: 1 for customer_id in ids}
    assert (planned, capped) == (len(ids), 3 * len(ids))
