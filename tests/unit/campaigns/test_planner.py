"""Planning a campaign: deliveries and reservations written set-based under the policy."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from campaigns import planner
from campaigns.models import Campaign, CampaignExclusion, Delivery
from prefcenter import policy
from prefcenter.models import ContactLogEntry, Customer, Topic
from prefcenter.services import contacts
from tests.campaign_builders import among, make_campaign
from tests.concurrency import run_together
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


def test_contacted_candidates_get_a_delivery_and_skipped_ones_are_counted_by_reason(
    dbsession, topic
):
    sends = reachable_customer(dbsession, topic)
    refused = reachable_customer(dbsession, topic)
    consent(dbsession, refused, "email").status = "refused"
    consent(dbsession, refused, "sms").status = "refused"
    unsubscribed = reachable_customer(dbsession)  # not subscribed to the opt-in topic
    dbsession.flush()
    campaign = make_campaign(dbsession, topic)

    counts = planner.plan(dbsession, campaign, among(sends, refused, unsubscribed), AT, cfg=CFG)

    rows = deliveries(dbsession, campaign)
    assert set(rows) == {sends.id}  # no delivery row for a skipped customer
    assert (rows[sends.id].channel, rows[sends.id].status) == ("email", "planned")
    assert rows[sends.id].scheduled_at == AT
    # Email and SMS refused: no channel passes; the first channel's reason is given.
    excluded = dbsession.execute(
        sa.select(
            CampaignExclusion.channel, CampaignExclusion.reason, CampaignExclusion.customers
        ).where(CampaignExclusion.campaign_id == campaign.id)
    ).all()
    assert sorted(excluded) == [("email", "no_consent", 1), ("email", "topic_unsubscribed", 1)]
    assert counts.channels == {"email": 1}
    assert counts.skipped == {"no_consent": 1, "topic_unsubscribed": 1}
    assert campaign.plan_counts["audience"] == 3


def test_why_one_customer_was_left_out_is_the_policy_s_answer_for_them(dbsession, topic):
    sends = reachable_customer(dbsession, topic)
    refused = reachable_customer(dbsession, topic)
    consent(dbsession, refused, "email").status = "refused"
    consent(dbsession, refused, "sms").status = "refused"
    dbsession.flush()
    campaign = make_campaign(dbsession, topic)
    planner.plan(dbsession, campaign, among(sends, refused), AT, cfg=CFG)

    skipped = planner.decision_for(dbsession, campaign, refused, AT, cfg=CFG)
    planned = planner.decision_for(dbsession, campaign, sends, AT, cfg=CFG)

    assert (skipped.decision, skipped.channel, skipped.reason) == ("skip", "email", "no_consent")
    assert (planned.decision, planned.channel) == ("send", "email")


def test_planning_leaves_no_staging_table_behind(dbsession, topic):
    campaign = make_campaign(dbsession, topic)
    before = set(sa.inspect(dbsession.connection()).get_table_names())

    planner.plan(dbsession, campaign, among(reachable_customer(dbsession, topic)), AT, cfg=CFG)

    assert set(sa.inspect(dbsession.connection()).get_table_names()) == before
    temporary = sa.inspect(dbsession.connection()).get_temp_table_names()
    assert not [name for name in temporary if name.startswith("plan_")]


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
    assert weekly.id not in deliveries(dbsession, second)


def test_skipped_customers_reserve_nothing(dbsession, topic):
    unsubscribed = reachable_customer(dbsession)
    campaign = make_campaign(dbsession, topic)

    planner.plan(dbsession, campaign, among(unsubscribed), AT, cfg=CFG)

    assert not dbsession.scalars(
        sa.select(ContactLogEntry).where(ContactLogEntry.message_ref == campaign.message_ref)
    ).all()


def test_planning_twice_plans_only_new_candidates_and_adds_up_exclusions(dbsession, topic):
    first = reachable_customer(dbsession, topic)
    campaign = make_campaign(dbsession, topic)
    planner.plan(dbsession, campaign, among(first, reachable_customer(dbsession)), AT, cfg=CFG)
    later = reachable_customer(dbsession, topic)
    unsubscribed = reachable_customer(dbsession)

    counts = planner.plan(
        dbsession,
        campaign,
        among(first, later, unsubscribed),
        AT + dt.timedelta(hours=1),
        cfg=CFG,
    )

    assert set(deliveries(dbsession, campaign)) == {first.id, later.id}
    assert counts.channels == {"email": 2}
    assert counts.skipped == {"topic_unsubscribed": 2}  # one per planning
    assert planner.exclusion_counts(dbsession, campaign.id) == {"topic_unsubscribed": 2}
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
        session.execute(sa.delete(Delivery).where(Delivery.campaign_id.in_(campaign_ids)))
        session.execute(sa.delete(Campaign).where(Campaign.id.in_(campaign_ids)))
        session.execute(sa.delete(Customer).where(Customer.id.in_(ids)))
        session.execute(sa.delete(ContactLogEntry).where(ContactLogEntry.topic_id == topic_id))
        session.execute(sa.delete(Topic).where(Topic.id == topic_id))
        session.commit()


def test_campaigns_planned_concurrently_never_exceed_a_cap(engine, committed_audience):
    topic_id, ids, campaign_ids = committed_audience

    def launch(campaign_id) -> None:
        with Session(engine) as session:
            campaign = session.get(Campaign, campaign_id)
            candidates = sa.select(Customer.id).where(Customer.id.in_(ids))
            planner.plan(session, campaign, candidates, AT, cfg=CFG)
            session.commit()

    run_together(launch, campaign_ids)

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
            sa.select(sa.func.sum(CampaignExclusion.customers)).where(
                CampaignExclusion.campaign_id.in_(campaign_ids),
                CampaignExclusion.reason == "frequency_cap",
            )
        )
    # Weekly cadence: each customer got exactly one of the four campaigns, never two.
    assert reserved == {customer_id: 1 for customer_id in ids}
    assert (planned, capped) == (len(ids), 3 * len(ids))


def test_a_planning_waits_for_a_single_reservation_in_progress_and_sees_it(
    engine, committed_audience
):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite serializes every writer with BEGIN IMMEDIATE")
    topic_id, ids, campaign_ids = committed_audience
    outcome: dict = {}

    def launch() -> None:
        try:
            with Session(engine) as session:
                campaign = session.get(Campaign, campaign_ids[0])
                candidates = sa.select(Customer.id).where(Customer.id.in_(ids))
                outcome["counts"] = planner.plan(session, campaign, candidates, AT, cfg=CFG)
                session.commit()
        except BaseException as exc:  # reported below, in the test's own thread
            outcome["error"] = exc

    with Session(engine) as alert:
        # A reservation for one weekly customer, not yet committed, holds the lock...
        customer = alert.get(Customer, ids[0])
        message = policy.Message.for_topic(
            alert.get(Topic, topic_id), ("email",), message_ref="alert:one"
        )
        assert contacts.reserve(alert, customer, message, AT, cfg=CFG).contacts
        thread = threading.Thread(target=launch)
        thread.start()
        # ...so the planning waits for it (seen in pg_locks) instead of deciding now.
        with engine.connect() as watcher:
            for _ in range(600):
                waiting = watcher.scalar(
                    sa.text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    )
                )
                if waiting:
                    break
                threading.Event().wait(0.05)
        assert waiting, "the planning did not wait for the reservation in progress"
        alert.commit()
    thread.join(timeout=120)
    assert "error" not in outcome, outcome.get("error")
    # It then counted that reservation: the weekly customer is capped, the others planned.
    assert outcome["counts"].skipped == {"frequency_cap": 1}
    assert outcome["counts"].channels == {"email": len(ids) - 1}
