"""Relational fallow over a simulated year: dormancy, enrolment, nudges, re-engagement, sunset."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import sqlalchemy as sa

from campaigns import dispatch, dormancy, planner
from campaigns.channels.outbox import OutboxTransport
from campaigns.models import Campaign, Delivery, DormancySnapshot, ReengagementEnrolment
from prefcenter.errors import InvalidInput
from prefcenter.models import ConsentLedgerEntry, ContactPreference, Customer
from prefcenter.services import interactions
from tests.factories import make_topic
from tests.policy_builders import consent, log_contact, reachable_customer, settings

START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)  # a Monday, 10:00 in Paris
CFG = settings()
LINKS = dispatch.Links("https://prefs.example.com", "dormancy-test-secret-0123456789-0123456789")
SENDER = dispatch.Dispatcher(
    CFG, LINKS, {ch: OutboxTransport() for ch in ("email", "sms", "phone", "post")}
)
STEP = {"email": {"fr": {"subject": "On vous a manqué", "text": "Bonjour {{ first_name }}"}}}


def day(n: int) -> dt.datetime:
    return START + dt.timedelta(days=n)


def interact(session, customer, when, key):
    interactions.ingest(
        session,
        "test",
        [interactions.NewInteraction(customer.external_id, "purchase", when, key, {})],
        now=when,
    )


@pytest.fixture
def topic(dbsession):
    return make_topic(dbsession, key="news")


@pytest.fixture
def program(dbsession, topic):
    return dormancy.create_program(
        dbsession,
        {
            "name": "Win back",
            "topic": "news",
            "channels": ["email"],
            "steps": [{"content": STEP}] * 3,
        },
    )


def test_a_program_gets_the_default_days_and_one_campaign_per_step(dbsession, program):
    assert [s["day"] for s in program.steps] == [0, 14, 30]
    campaigns = [
        dbsession.get(Campaign, __import__("uuid").UUID(i)) for i in program.step_campaigns
    ]
    assert [c.name for c in campaigns] == [
        "Win back — step 1",
        "Win back — step 2",
        "Win back — step 3",
    ]


def test_a_bad_program_names_each_problem_and_creates_nothing(dbsession, topic):
    with pytest.raises(InvalidInput) as excinfo:
        dormancy.create_program(
            dbsession,
            {
                "name": "",
                "topic": "nope",
                "channels": ["fax"],
                "steps": [{"day": 10, "content": STEP}, {"day": 5, "content": {"email": {}}}],
            },
        )
    fields = {e.field for e in excinfo.value.errors}
    assert fields == {"/name", "/topic", "/channels", "/steps/1/day"}
    assert dbsession.scalar(sa.select(sa.func.count()).select_from(Campaign)) == 0


def test_a_simulated_year(dbsession, topic, program):
    regular = reachable_customer(dbsession, topic, first_name="Régulière", created_at=day(-400))
    silent = reachable_customer(dbsession, topic, first_name="Silencieux", created_at=day(-400))
    clicker = reachable_customer(dbsession, topic, first_name="Revenue", created_at=day(-400))
    refused = reachable_customer(dbsession, topic, first_name="Refus", created_at=day(-400))
    capped = reachable_customer(
        dbsession, topic, first_name="Plafond", frequency="weekly", created_at=day(-400)
    )
    consent(dbsession, refused, "email").status = "refused"
    dbsession.flush()
    for customer in (silent, refused, capped):
        interact(dbsession, customer, day(0), f"{customer.id}-0")
    interact(dbsession, clicker, day(10), "clicker-10")

    snapshots = {}
    for n in range(0, 366):
        at = day(n)
        if n % 7 == 0:
            interact(dbsession, regular, at, f"regular-{n}")
        if n == 200:  # the clicker comes back, ten days into their program
            interact(dbsession, clicker, at, "clicker-200")
        if n == 192:  # another campaign reached the weekly customer two days before step 2
            log_contact(dbsession, capped, at)
        dormancy.run_daily(dbsession, at, CFG)
        dispatch.send_deliveries(dbsession, dispatch.queue_due(dbsession, at), at, SENDER)
        snapshots[n] = dbsession.get(DormancySnapshot, at.date()).dormant

    enrolments = {
        e.customer_id: e for e in dbsession.scalars(sa.select(ReengagementEnrolment)).all()
    }
    # Dormant exactly 180 days after the last interaction, not a day before.
    assert (snapshots[179], snapshots[180]) == (0, 3)
    assert regular.id not in enrolments
    assert enrolments[silent.id].enrolled_at == day(180)
    assert enrolments[clicker.id].enrolled_at == day(190)

    def sent(customer) -> list[dt.datetime]:
        return sorted(
            dbsession.scalars(
                sa.select(Delivery.sent_at).where(
                    Delivery.customer_id == customer.id, Delivery.status == "sent"
                )
            )
        )

    # Three nudges on days 0, +14, +30 of the program, then sunset 14 days later.
    assert sent(silent) == [day(180), day(194), day(210)]
    assert enrolments[silent.id].status == "sunset"
    assert enrolments[silent.id].ended_at == day(224)
    assert dbsession.get(ContactPreference, silent.id).frequency == "monthly"
    ledger = dbsession.scalars(
        sa.select(ConsentLedgerEntry).where(
            ConsentLedgerEntry.customer_id == silent.id, ConsentLedgerEntry.field == "frequency"
        )
    ).one()
    assert (ledger.actor_type, ledger.actor_id, ledger.before, ledger.after) == (
        "system",
        "sunset",
        "any",
        "monthly",
    )
    # The clicker got the first nudge only, and came back after 10 days.
    assert sent(clicker) == [day(190)]
    assert enrolments[clicker.id].status == "reengaged"
    assert enrolments[clicker.id].reengaged_at == day(200)
    # The policy had the last word on every nudge: planning left the refused customer out
    # of every step and the weekly one out of step 2 (no delivery; counted by reason).
    assert sent(refused) == []
    assert not dbsession.scalars(
        sa.select(Delivery.id).where(Delivery.customer_id == refused.id)
    ).all()
    step_campaigns = [dbsession.get(Campaign, uuid.UUID(i)) for i in program.step_campaigns]
    assert [planner.exclusion_counts(dbsession, c.id) for c in step_campaigns] == [
        {"no_consent": 1},
        {"frequency_cap": 1, "no_consent": 1},
        {"no_consent": 1},
    ]
    capped_steps = dbsession.scalars(
        sa.select(Campaign.name)
        .join(Delivery, Delivery.campaign_id == Campaign.id)
        .where(Delivery.customer_id == capped.id)
        .order_by(Campaign.name)
    ).all()
    assert capped_steps == ["Win back — step 1", "Win back — step 3"]
    why = planner.decision_for(dbsession, step_campaigns[0], refused, day(180), cfg=CFG)
    assert (why.decision, why.reason) == ("skip", "no_consent")

    counts = dormancy.program_counts(dbsession, program)
    assert counts["enrolled"] == 4 and counts["reengaged"] == 1 and counts["sunset"] == 3
    assert counts["reengagement_rate"] == 0.25
    assert counts["median_days_to_reengage"] == 10.0
    dbsession.refresh(regular)
    assert not dbsession.scalar(
        sa.select(sa.func.count()).where(Customer.id == regular.id, Customer.erased_at.is_not(None))
    )


def test_recompute_rebuilds_last_interaction_from_the_interactions(dbsession, topic):
    customer = reachable_customer(dbsession, topic)
    interact(dbsession, customer, day(3), "a")
    customer.last_interaction_at = None  # drifted
    dbsession.flush()

    assert dormancy.recompute_last_interactions(dbsession, day(10)) >= 1
    dbsession.refresh(customer)
    assert customer.last_interaction_at == day(3)
    assert dormancy.recompute_last_interactions(dbsession, day(10)) == 0


def test_the_day_starts_by_repairing_a_drifted_engagement_signal(dbsession, topic):
    customer = reachable_customer(dbsession, topic)
    interact(dbsession, customer, day(3), "a")
    customer.last_interaction_at = None  # a writer forgot to move it
    dbsession.flush()

    report = dormancy.run_daily(dbsession, day(10), CFG)

    dbsession.refresh(customer)
    assert (report.repaired, customer.last_interaction_at) == (1, day(3))
    assert dormancy.run_daily(dbsession, day(11), CFG).repaired == 0


def test_recompute_writes_only_the_customers_whose_last_interaction_is_wrong(dbsession, topic):
    right, drifted, silent = (reachable_customer(dbsession, topic) for _ in range(3))
    interact(dbsession, right, day(2), "r1")
    interact(dbsession, drifted, day(3), "d1")
    interact(dbsession, drifted, day(5), "d2")
    interact(dbsession, drifted, day(20), "d3")  # after the rebuild's time: not counted
    for customer, last in ((right, day(2)), (drifted, day(1)), (silent, day(4))):
        dbsession.execute(
            sa.update(Customer)
            .where(Customer.id == customer.id)
            .values(last_interaction_at=last, updated_at=day(1))
        )

    assert dormancy.recompute_last_interactions(dbsession, day(10)) == 1

    dbsession.expire_all()
    rows = {
        c.id: (c.last_interaction_at, c.updated_at)
        for c in dbsession.scalars(
            sa.select(Customer).where(Customer.id.in_([right.id, drifted.id, silent.id]))
        )
    }
    assert rows[right.id] == (day(2), day(1))  # already right: not written at all
    assert rows[drifted.id][0] == day(5)
    assert rows[silent.id] == (day(4), day(1))  # no interaction to rebuild from: left as is
