"""Property: the per-customer policy and the set-based SQL policy always agree.

Hypothesis builds random populations (addresses, confirmations, consents,
subscriptions, cadences, pauses, contact hours in many time zones, suppressions,
contact histories, pressure rules) and a random message and instant; for every
customer both forms must return the same decision, channel, reason and defer time.
Runs on SQLite and on PostgreSQL (the ``dbsession`` fixture is parametrized).
"""

from __future__ import annotations

import datetime as dt
import itertools

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefcenter import policy
from prefcenter.models import (
    ChannelConsent,
    ContactLogEntry,
    ContactPreference,
    Customer,
    PressureRule,
    Suppression,
    Topic,
    TopicSubscription,
)
from prefcenter.models.vocabulary import CHANNELS
from tests.policy_builders import email_hmac, phone_hmac
from tests.policy_builders import settings as policy_settings

TIMEZONES = [
    "Europe/Paris",
    "Europe/London",
    "America/New_York",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "Australia/Lord_Howe",
    "Indian/Reunion",
    "UTC",
]
# Instants near the 2026 European DST switches and elsewhere in the year.
INSTANTS = st.one_of(
    st.datetimes(min_value=dt.datetime(2026, 3, 28, 20), max_value=dt.datetime(2026, 3, 29, 6)),
    st.datetimes(min_value=dt.datetime(2026, 10, 24, 20), max_value=dt.datetime(2026, 10, 25, 6)),
    st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2026, 12, 31)),
).map(lambda d: d.replace(tzinfo=dt.UTC))

ORDERS = [",".join(o) for n in range(0, 5) for o in itertools.permutations(CHANNELS, n)]
MINUTES = st.one_of(
    st.none(), st.sampled_from([0, 60, 120, 150, 480, 540, 1200, 1320, 1439]), st.integers(0, 1439)
)


ALL_GRANTED = {c: ("granted", "current") for c in CHANNELS}


@st.composite
def customers(draw):
    # Most generated customers pass the early rules, so that the later ones (pause,
    # caps, quiet hours, channel choice) are exercised too; each field may still vary.
    good = draw(st.integers(0, 9)) < 7

    def field(good_value, strategy):
        if good and draw(st.integers(0, 5)) > 0:
            return good_value
        return draw(strategy)

    return {
        "email": field("a@example.com", st.sampled_from([None, "a@example.com", "b@example.com"])),
        "phone": field("+33612345678", st.sampled_from([None, "+33612345678", "+447700900123"])),
        "erased": field(False, st.integers(0, 9).map(lambda n: n == 0)),
        "postal": field(True, st.booleans()),
        "timezone": draw(st.sampled_from(TIMEZONES)),
        "consents": field(
            ALL_GRANTED,
            st.dictionaries(
                st.sampled_from(CHANNELS),
                st.tuples(
                    st.sampled_from(["granted", "pending", "refused"]),
                    st.sampled_from(["current", "old", None]),
                ),
            ),
        ),
        "subscription": field("subscribed", st.sampled_from([None, "subscribed", "unsubscribed"])),
        "topic_frequency": draw(st.sampled_from([None, "any", "weekly", "monthly"])),
        "preference": field(True, st.booleans()),
        "frequency": draw(st.sampled_from(["any", "weekly", "monthly"])),
        "order": draw(st.sampled_from([*ORDERS, "fax,email"])),
        "hours": (draw(MINUTES), draw(st.one_of(st.none(), st.integers(0, 1440)))),
        "paused_days": draw(st.sampled_from([None, None, None, -1, 0, 5, 30])),
        # (days from the instant, channel, on our topic?, kind, status, own message?)
        "history": draw(
            st.lists(
                st.tuples(
                    st.one_of(
                        st.floats(-10, 10, allow_nan=False),
                        st.floats(-40, 40, allow_nan=False),
                        st.sampled_from([-30, -7, -1, 1, 7, 30]),
                    ),
                    st.sampled_from(CHANNELS),
                    st.booleans(),
                    st.sampled_from(["marketing", "marketing", "alert"]),
                    st.sampled_from(["sent", "reserved", "released"]),
                    st.booleans(),
                ),
                max_size=4,
            )
        ),
        "suppressed": field(
            [],
            st.lists(
                st.tuples(
                    st.sampled_from(CHANNELS),
                    st.sampled_from(["manual", "hard_bounce", "phone_opposition"]),
                ),
                max_size=2,
                unique=True,
            ),
        ),
    }


@st.composite
def scenarios(draw):
    return {
        "customers": draw(st.lists(customers(), min_size=1, max_size=6)),
        "topic_regime": draw(st.sampled_from(["opt_in", "opt_out"])),
        "kind": draw(st.sampled_from(["marketing", "alert"])),
        "channels": draw(st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=4, unique=True)),
        "own_ref": draw(st.booleans()),
        "rules": draw(
            st.lists(
                st.tuples(
                    st.sampled_from([None, *CHANNELS]),
                    st.sampled_from([1, 7, 14]),
                    st.integers(0, 3),
                    st.booleans(),
                ),
                max_size=3,
                unique_by=lambda r: (r[0], r[1]),
            )
        ),
        "at": draw(INSTANTS),
        "default_hours": draw(st.sampled_from([(540, 1200), (1320, 480), (0, 1440)])),
    }


def _build(session, scenario):
    at = scenario["at"]
    topic = Topic(key="t", kind=scenario["kind"], regime=scenario["topic_regime"])
    other = Topic(key="other", kind="marketing", regime="opt_in")
    session.add_all([topic, other])
    for channel, days, limit, active in scenario["rules"]:
        session.add(
            PressureRule(channel=channel, period_days=days, max_messages=limit, active=active)
        )
    session.flush()
    built = []
    suppressed = set()
    for n, spec in enumerate(scenario["customers"]):
        customer = Customer(
            external_id=f"H-{n}",
            email=spec["email"],
            email_hmac=email_hmac(spec["email"]) if spec["email"] else None,
            phone=spec["phone"],
            phone_hmac=phone_hmac(spec["phone"]) if spec["phone"] else None,
            postal_line1="3 rue X" if spec["postal"] else None,
            postal_code="69001" if spec["postal"] else None,
            city="Lyon" if spec["postal"] else None,
            postal_hmac="postal-hmac" if spec["postal"] else None,
            timezone=spec["timezone"],
            erased_at=at - dt.timedelta(days=1) if spec["erased"] else None,
        )
        session.add(customer)
        session.flush()
        for channel, (status, confirmed) in spec["consents"].items():
            current = {"email": customer.email_hmac, "sms": customer.phone_hmac}.get(channel)
            session.add(
                ChannelConsent(
                    customer_id=customer.id,
                    channel=channel,
                    status=status,
                    confirmed_hmac={"current": current, "old": "old-hmac", None: None}[confirmed],
                )
            )
        if spec["subscription"]:
            session.add(
                TopicSubscription(
                    customer_id=customer.id,
                    topic_id=topic.id,
                    status=spec["subscription"],
                    frequency=spec["topic_frequency"],
                )
            )
        if spec["preference"]:
            paused = spec["paused_days"]
            session.add(
                ContactPreference(
                    customer_id=customer.id,
                    frequency=spec["frequency"],
                    channel_order=spec["order"],
                    contact_start=spec["hours"][0],
                    contact_end=spec["hours"][1],
                    paused_until=at + dt.timedelta(days=paused) if paused is not None else None,
                )
            )
        for i, (days, channel, on_topic, kind, status, own) in enumerate(spec["history"]):
            session.add(
                ContactLogEntry(
                    customer_id=customer.id,
                    channel=channel,
                    topic_id=topic.id if on_topic else other.id,
                    kind=kind,
                    at=at + dt.timedelta(days=days),
                    status=status,
                    message_ref="campaign:own" if own and i == 0 else f"campaign:{n}-{i}",
                )
            )
        for channel, reason in spec["suppressed"]:
            hmac = {
                "email": customer.email_hmac,
                "sms": customer.phone_hmac,
                "phone": customer.phone_hmac,
                "post": customer.postal_hmac,
            }[channel]
            if hmac and (channel, hmac, reason) not in suppressed:
                suppressed.add((channel, hmac, reason))
                session.add(Suppression(channel=channel, address_hmac=hmac, reason=reason))
        session.flush()
        built.append(customer)
    return topic, built


def _check(session, scenario):
    topic, built = _build(session, scenario)
    cfg = policy_settings(default_contact_hours=scenario["default_hours"])
    message = policy.Message.for_topic(
        topic,
        scenario["channels"],
        scenario["kind"],
        message_ref="campaign:own" if scenario["own_ref"] else None,
    )
    at = scenario["at"]
    candidates = sa.select(Customer.id).where(Customer.id.in_([c.id for c in built]))
    with policy.audience(session, message, candidates, at, cfg=cfg) as audience:
        rows = {row.customer_id: row for row in session.execute(audience.query)}
    assert set(rows) == {c.id for c in built}
    for customer in built:
        expected = policy.choose(session, customer, message, at, cfg=cfg)
        row = rows[customer.id]
        got = policy.Decision(row.decision, row.channel, row.reason, row.until)
        assert got == expected, (customer.external_id, scenario)
        if expected.contacts:
            assert row.contact_at == (expected.until or at)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_both_forms_of_the_policy_agree(dbsession, scenario):
    savepoint = dbsession.begin_nested()
    try:
        _check(dbsession, scenario)
    finally:
        savepoint.rollback()
        dbsession.expunge_all()
