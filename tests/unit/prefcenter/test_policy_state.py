"""``policy_state`` follows every write to the tables it copies, and both forms still agree.

On PostgreSQL the set-based policy reads the consents, preferences and counted contacts
from ``policy_state``, which triggers (migration 0005) keep current; the per-customer
form reads the tables themselves. After each kind of write — the preference services,
the reservation services, set-based statements of the shapes planning, dispatch and
the webhook use, deletions — the table must equal a rebuild from scratch, and both
forms must give the same decision. On SQLite the table is not kept (the set-based form
reads the tables there), so only the agreement is checked.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from prefcenter import policy
from prefcenter.db import staged
from prefcenter.models import (
    ChannelConsent,
    ContactLogEntry,
    ContactPreference,
    Customer,
    PolicyState,
    PressureRule,
)
from prefcenter.services import contacts
from prefcenter.services import preferences as prefs
from prefcenter.services.gdpr import erase_customer
from prefcenter.services.ledger import Actor
from tests.factories import make_customer, make_topic
from tests.policy_builders import log_contact, reachable_customer, settings

# A Monday at 10:00 in Paris (09:00 UTC).
AT = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
CFG = settings()
ACTOR = Actor.system("test")
PROOF = {"source": "checkout form", "collected_at": "2026-11-20T18:30:00+01:00"}
CHANNELS = ("email", "sms", "post")


def _postgres(session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _state(session) -> dict[Any, dict[str, Any]]:
    """policy_state by customer, leaving out rows that say nothing (all NULL)."""
    table = PolicyState.__table__
    rows = {}
    for row in session.execute(sa.select(table)):
        values = {k: v for k, v in row._mapping.items() if k != "customer_id"}
        if any(v is not None for v in values.values()):
            rows[row.customer_id] = values
    return rows


def assert_state_current(session) -> None:
    """The triggers left policy_state as a rebuild from the tables would make it."""
    if not _postgres(session):
        return
    session.flush()
    kept = _state(session)
    savepoint = session.begin_nested()
    session.execute(sa.text("SELECT policy_state_rebuild()"))
    rebuilt = _state(session)
    savepoint.rollback()
    assert kept == rebuilt


def assert_forms_agree(session, topic, ref: str | None = None) -> list[policy.Decision]:
    message = policy.Message.for_topic(topic, CHANNELS, message_ref=ref)
    people = session.scalars(sa.select(Customer).order_by(Customer.external_id)).all()
    candidates = sa.select(Customer.id)
    with policy.audience(session, message, candidates, AT, cfg=CFG) as audience:
        rows = {row.customer_id: row for row in session.execute(audience.query)}
    decisions = []
    for customer in people:
        expected = policy.choose(session, customer, message, AT, cfg=CFG)
        row = rows[customer.id]
        assert policy.Decision(row.decision, row.channel, row.reason, row.until) == expected, (
            customer.external_id
        )
        decisions.append(expected)
    return decisions


@pytest.fixture
def topic(dbsession):
    return make_topic(dbsession, key="offers", kind="marketing", regime="opt_in")


@pytest.fixture
def people(dbsession, topic):
    """Three reachable customers: any cadence, weekly (with a contact), quiet hours."""
    dbsession.add(PressureRule(channel=None, period_days=7, max_messages=2, active=True))
    dbsession.add(PressureRule(channel="sms", period_days=30, max_messages=1, active=True))
    anyone = reachable_customer(
        dbsession, topic, external_id="P-1", channels=("email", "sms", "phone")
    )
    weekly = reachable_customer(dbsession, topic, external_id="P-2", frequency="weekly")
    night = reachable_customer(
        dbsession, topic, external_id="P-3", hours=(1200, 1320), channels=("email", "post")
    )
    log_contact(dbsession, weekly, AT - dt.timedelta(days=10), topic=topic)
    log_contact(dbsession, anyone, AT - dt.timedelta(days=3), channel="sms", topic=topic)
    return anyone, weekly, night


def _reserve_all(session, topic, ref="campaign:plan") -> None:
    message = policy.Message.for_topic(topic, CHANNELS, message_ref=ref)
    contacts.reserve_audience(session, message, sa.select(Customer.id), AT, cfg=CFG)


def _reserve_staged(session, topic, kind: str = "marketing") -> None:
    """As campaign planning reserves (from its staged decisions, one row per customer,
    policy_state updated in one pass, not by the trigger): everybody, plus a customer
    who had no policy_state row yet, each on their own channel an hour later."""
    make_customer(session, external_id="P-9")  # no consent, preference nor contact
    message = policy.Message.for_topic(topic, CHANNELS, kind, message_ref="campaign:staged")
    channel = sa.case((Customer.external_id == "P-1", "sms"), else_="email")
    later = sa.literal(AT + dt.timedelta(hours=1), ContactLogEntry.at.type)
    decided = sa.select(
        Customer.id.label("customer_id"), channel.label("channel"), later.label("contact_at")
    )
    with staged(session, decided) as table:
        contacts.insert_staged_reservations(
            session,
            message,
            sa.select(table.c.customer_id, table.c.channel, table.c.contact_at),
            AT,
        )


def _writes(session, topic, people) -> dict[str, Callable[[], Any]]:
    anyone, weekly, night = people
    log = ContactLogEntry
    return {
        # The preference services (consents and the preference row, through the ORM).
        "grant with proof": lambda: prefs.grant_with_proof(
            session, night, "sms", ACTOR, source="api", proof=PROOF, cfg=CFG, now=AT
        ),
        "grant from form": lambda: prefs.grant_from_form(
            session, anyone, "post", ACTOR, notice_text="Letters?", cfg=CFG,
            secret="s" * 40, now=AT,
        ),
        "refuse": lambda: prefs.refuse(session, anyone, "email", ACTOR, now=AT),
        "double opt-in started": lambda: prefs.start_double_opt_in(
            session, night, "sms", ACTOR, cfg=CFG, secret="s" * 40, now=AT
        ),
        "address changed": lambda: prefs.set_address(
            session, anyone, "email", "new@example.com", ACTOR, cfg=CFG, now=AT
        ),
        "frequency": lambda: prefs.set_frequency(session, anyone, "monthly", ACTOR, now=AT),
        "channel order": lambda: prefs.set_channel_order(
            session, weekly, ["post", "email"], ACTOR, now=AT
        ),
        "contact hours": lambda: prefs.set_contact_hours(
            session, anyone, 1200, 1260, ACTOR, now=AT
        ),
        "pause": lambda: prefs.pause(session, weekly, AT + dt.timedelta(days=9), ACTOR, now=AT),
        "pause then resume": lambda: (
            prefs.pause(session, weekly, AT + dt.timedelta(days=9), ACTOR, now=AT),
            prefs.resume(session, weekly, ACTOR, now=AT),
        ),
        "erasure": lambda: erase_customer(session, weekly, ACTOR, cfg=CFG, now=AT),
        # The reservation services (contact_log: one row, and INSERT ... SELECT).
        "reserve one": lambda: contacts.reserve(
            session, anyone, policy.Message.for_topic(topic, CHANNELS, message_ref="m:1"),
            AT, cfg=CFG,
        ),
        "reserve an audience": lambda: _reserve_all(session, topic),
        "reserve, mark sent": lambda: (
            _reserve_all(session, topic),
            contacts.mark_sent(session, anyone.id, "campaign:plan", AT + dt.timedelta(hours=1)),
        ),
        "reserve, release": lambda: (
            _reserve_all(session, topic),
            contacts.release(session, anyone.id, "campaign:plan"),
        ),
        "released, reserved again": lambda: (
            _reserve_all(session, topic, "m:2"),
            contacts.release(session, anyone.id, "m:2"),
            session.expire_all(),
            contacts.reserve(
                session, anyone, policy.Message.for_topic(topic, CHANNELS, message_ref="m:2"),
                AT, cfg=CFG,
            ),
        ),
        "reservations from a staged plan": lambda: _reserve_staged(session, topic),
        "alert reservations from a staged plan": lambda: _reserve_staged(session, topic, "alert"),
        "an alert logged": lambda: log_contact(session, night, AT, kind="alert"),
        # Set-based statements (planning, dispatch, cancellation and the webhook write so).
        "contacts settled in bulk": lambda: (
            _reserve_all(session, topic),
            session.execute(
                sa.update(log)
                .where(log.message_ref == "campaign:plan", log.status == "reserved")
                .values(status="sent", at=AT - dt.timedelta(hours=2))
            ),
        ),
        "contacts released in bulk": lambda: (
            _reserve_all(session, topic),
            session.execute(sa.update(log).values(status="released")),
        ),
        "reservations moved": lambda: (
            _reserve_all(session, topic),
            session.execute(
                sa.update(log)
                .where(log.message_ref == "campaign:plan")
                .values(at=AT + dt.timedelta(days=8))
            ),
        ),
        # Updates of a batch of contacts in other shapes than dispatch's (one per
        # customer): equal instants, several per customer, mixed outcomes, moves.
        "two contacts at one instant, one of them sent later": lambda: (
            log_contact(session, anyone, AT, status="reserved", message_ref="m:3", topic=topic),
            log_contact(session, anyone, AT, status="reserved", message_ref="m:4", topic=topic),
            session.execute(
                sa.update(log)
                .where(log.message_ref == "m:3")
                .values(status="sent", at=AT + dt.timedelta(hours=5))
            ),
        ),
        "two of a customer's contacts sent in one statement": lambda: (
            log_contact(session, anyone, AT, status="reserved", message_ref="m:5"),
            log_contact(session, anyone, AT, status="reserved", message_ref="m:6", topic=topic),
            session.execute(
                sa.update(log)
                .where(log.message_ref.in_(("m:5", "m:6")))
                .values(status="sent", at=AT + dt.timedelta(hours=3))
            ),
        ),
        "one contact sent, another released, one statement": lambda: (
            _reserve_all(session, topic),
            session.execute(
                sa.update(log)
                .where(log.message_ref == "campaign:plan")
                .values(
                    status=sa.case((log.channel == "email", "sent"), else_="released"),
                    at=AT + dt.timedelta(hours=1),
                )
            ),
        ),
        "a contact moved to another channel": lambda: (
            log_contact(session, night, AT, channel="email", status="reserved", topic=topic),
            session.execute(
                sa.update(log).where(log.customer_id == night.id).values(channel="post")
            ),
        ),
        "a contact moved to another topic": lambda: (
            log_contact(session, night, AT, status="reserved", message_ref="m:7", topic=topic),
            session.execute(
                sa.update(log).where(log.message_ref == "m:7").values(topic_id=None)
            ),
        ),
        "contacts deleted": lambda: session.execute(sa.delete(log)),
        "consents inserted by a select": lambda: (
            session.execute(sa.delete(ChannelConsent).where(ChannelConsent.channel == "post")),
            session.execute(
                sa.insert(ChannelConsent).from_select(
                    ["id", "customer_id", "channel", "status", "created_at", "updated_at"],
                    sa.select(
                        sa.func.lower(sa.func.hex(sa.func.randomblob(16)))
                        if not _postgres(session)
                        else sa.func.gen_random_uuid(),
                        Customer.id,
                        sa.literal("post"),
                        sa.literal("refused"),
                        sa.literal(AT, ContactLogEntry.created_at.type),
                        sa.literal(AT, ContactLogEntry.created_at.type),
                    ),
                )
            ),
        ),
        "consents updated in bulk": lambda: session.execute(
            sa.update(ChannelConsent)
            .where(ChannelConsent.channel == "email")
            .values(status="pending")
        ),
        "consents deleted": lambda: session.execute(
            sa.delete(ChannelConsent).where(ChannelConsent.channel == "sms")
        ),
        "preferences updated in bulk": lambda: session.execute(
            sa.update(ContactPreference).values(frequency="weekly", channel_order="sms,post")
        ),
        "preferences deleted": lambda: session.execute(sa.delete(ContactPreference)),
        "a customer deleted": lambda: session.execute(
            sa.delete(Customer).where(Customer.id == night.id)
        ),
    }  # fmt: skip


WRITES = [
    "grant with proof",
    "grant from form",
    "refuse",
    "double opt-in started",
    "address changed",
    "frequency",
    "channel order",
    "contact hours",
    "pause",
    "pause then resume",
    "erasure",
    "reserve one",
    "reserve an audience",
    "reserve, mark sent",
    "reserve, release",
    "released, reserved again",
    "reservations from a staged plan",
    "alert reservations from a staged plan",
    "an alert logged",
    "contacts settled in bulk",
    "contacts released in bulk",
    "reservations moved",
    "two contacts at one instant, one of them sent later",
    "two of a customer's contacts sent in one statement",
    "one contact sent, another released, one statement",
    "a contact moved to another channel",
    "a contact moved to another topic",
    "contacts deleted",
    "consents inserted by a select",
    "consents updated in bulk",
    "consents deleted",
    "preferences updated in bulk",
    "preferences deleted",
    "a customer deleted",
]


def test_the_builders_start_current(dbsession, topic, people):
    assert_state_current(dbsession)
    assert_forms_agree(dbsession, topic)


@pytest.mark.parametrize("name", WRITES)
def test_after_each_write_the_state_is_current_and_both_forms_agree(dbsession, topic, people, name):
    assert_forms_agree(dbsession, topic)
    before = _state(dbsession)
    _writes(dbsession, topic, people)[name]()
    dbsession.flush()
    dbsession.expire_all()
    assert_state_current(dbsession)
    assert_forms_agree(dbsession, topic)
    assert_forms_agree(dbsession, topic, ref="campaign:plan")  # the send-time re-check
    unchanged = ("an alert logged", "pause then resume", "alert reservations from a staged plan")
    if _postgres(dbsession) and name not in unchanged:
        assert _state(dbsession) != before, "the write should have changed the state"


def test_every_write_is_listed(dbsession, topic, people):
    assert sorted(_writes(dbsession, topic, people)) == sorted(WRITES)


def test_counted_instants_are_sorted_per_channel(dbsession, topic, people):
    if not _postgres(dbsession):
        pytest.skip("policy_state is kept on PostgreSQL only")
    anyone = people[0]
    for days, channel in ((5, "email"), (-20, "sms"), (1, "email"), (-20, "post")):
        log_contact(dbsession, anyone, AT + dt.timedelta(days=days), channel=channel, topic=topic)
    state = dbsession.get(PolicyState, anyone.id)
    dbsession.refresh(state)
    assert state.counted_at == sorted(state.counted_at)
    assert len(state.counted_at) == len(state.counted_topic_at) == 5
    assert state.counted_topic_at == sorted(state.counted_topic_at)
    assert (
        state.counted_topic_at[0] == f"{topic.id} {AT - dt.timedelta(days=20):%Y-%m-%d %H:%M:%S.%f}"
    )
    assert state.counted_email_at == sorted(state.counted_email_at)
    assert len(state.counted_email_at) == 2
    assert state.counted_phone_at is None
