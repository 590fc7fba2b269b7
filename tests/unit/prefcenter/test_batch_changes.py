"""Set-based forms of the consent services: a batch does what one call after another does."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from prefcenter.consent_settings import ConsentSettings
from prefcenter.errors import InvalidInput
from prefcenter.models import ChannelConsent, ConsentLedgerEntry, Suppression, TopicSubscription
from prefcenter.services import preferences as prefs
from prefcenter.services import suppressions
from prefcenter.services.ledger import Actor
from tests.factories import make_customer, make_topic

NOW = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
PROVIDER = Actor("provider", "sendgrid")
CFG = ConsentSettings(address_key=b"batch-test-key-0123456789abcdefgh")


def _customer(session, offers, news):
    customer = make_customer(session)
    session.add(ChannelConsent(customer_id=customer.id, channel="email", status="granted"))
    session.add(ChannelConsent(customer_id=customer.id, channel="sms", status="refused"))
    session.add(TopicSubscription(customer_id=customer.id, topic_id=offers.id, status="subscribed"))
    session.flush()
    session.refresh(customer)
    return customer


def _state(session, customer):
    session.expire_all()
    consents = session.execute(
        sa.select(ChannelConsent.channel, ChannelConsent.status, ChannelConsent.source)
        .where(ChannelConsent.customer_id == customer.id)
        .order_by(ChannelConsent.channel)
    ).all()
    subscriptions = session.execute(
        sa.select(TopicSubscription.topic_id, TopicSubscription.status)
        .where(TopicSubscription.customer_id == customer.id)
        .order_by(TopicSubscription.topic_id)
    ).all()
    ledger = session.execute(
        sa.select(
            ConsentLedgerEntry.field,
            ConsentLedgerEntry.before,
            ConsentLedgerEntry.after,
            ConsentLedgerEntry.actor_type,
            ConsentLedgerEntry.actor_id,
        )
        .where(ConsentLedgerEntry.customer_id == customer.id)
        .order_by(ConsentLedgerEntry.at, ConsentLedgerEntry.id)
    ).all()
    return (
        [tuple(r) for r in consents],
        [tuple(r) for r in subscriptions],
        [tuple(r) for r in ledger],
    )


def test_a_batch_ends_where_the_same_calls_one_by_one_end_with_the_same_ledger(dbsession):
    offers = make_topic(dbsession, key="offers", regime="opt_in")
    news = make_topic(dbsession, key="news", regime="opt_out")
    one_by_one, batched = _customer(dbsession, offers, news), _customer(dbsession, offers, news)
    steps = [
        ("refuse", "email"),
        ("refuse", "email"),  # already refused: nothing
        ("refuse", "sms"),  # already refused: nothing
        ("refuse", "phone"),  # no row yet: a new refused row
        ("subscription", offers, False),
        ("subscription", offers, True),
        ("subscription", offers, True),  # already subscribed: nothing
        ("subscription", news, False),  # no row yet (opt-out topic)
        ("subscription", offers, False),
    ]
    for step in steps:
        if step[0] == "refuse":
            prefs.refuse(dbsession, one_by_one, step[1], PROVIDER, now=NOW, source="sendgrid")
        else:
            prefs.set_subscription(dbsession, one_by_one, step[1], step[2], PROVIDER, now=NOW)
    changes = [
        prefs.BatchChange(batched.id, channel=s[1], source="sendgrid")
        if s[0] == "refuse"
        else prefs.BatchChange(batched.id, topic_id=s[1].id, subscribed=s[2])
        for s in steps
    ]

    result = prefs.apply_batch(dbsession, changes, PROVIDER, now=NOW)

    expected, got = _state(dbsession, one_by_one), _state(dbsession, batched)
    assert got == expected
    assert (result.changed, result.unchanged, result.refused) == (6, 3, 0)
    assert len(got[2]) == 6  # one ledger row per change that changed something


def test_a_refusal_cancels_a_double_opt_in_in_progress(dbsession):
    customer = make_customer(dbsession)
    dbsession.add(
        ChannelConsent(
            customer_id=customer.id,
            channel="email",
            status="pending",
            confirmation_hash="x" * 128,
            confirmation_expires_at=NOW + dt.timedelta(days=1),
            confirmation_attempts=2,
            source="portal",
        )
    )
    dbsession.flush()

    prefs.apply_batch(
        dbsession, [prefs.BatchChange(customer.id, channel="email")], PROVIDER, now=NOW
    )

    dbsession.expire_all()
    consent = dbsession.scalar(
        sa.select(ChannelConsent).where(ChannelConsent.customer_id == customer.id)
    )
    assert (consent.status, consent.refused_at, consent.source) == ("refused", NOW, "portal")
    assert (consent.confirmation_hash, consent.confirmation_attempts) == (None, 0)


def test_subscribing_an_erased_customer_or_to_an_inactive_topic_is_skipped_not_raised(dbsession):
    gone = make_topic(dbsession, key="gone", active=False)
    offers = make_topic(dbsession, key="offers2")
    erased = make_customer(dbsession, erased_at=NOW - dt.timedelta(days=1))
    active = make_customer(dbsession)
    with pytest.raises(InvalidInput):  # what the one-by-one service does
        prefs.set_subscription(dbsession, active, gone, True, PROVIDER, now=NOW)

    result = prefs.apply_batch(
        dbsession,
        [
            prefs.BatchChange(active.id, topic_id=gone.id, subscribed=True),
            prefs.BatchChange(erased.id, topic_id=offers.id, subscribed=True),
            prefs.BatchChange(erased.id, topic_id=offers.id, subscribed=False),  # allowed
            prefs.BatchChange(active.id, topic_id=offers.id, subscribed=True),
        ],
        PROVIDER,
        now=NOW,
    )

    assert (result.changed, result.refused) == (2, 2)
    rows = dbsession.execute(
        sa.select(TopicSubscription.customer_id, TopicSubscription.status).where(
            TopicSubscription.topic_id == offers.id
        )
    ).all()
    assert sorted(map(tuple, rows), key=str) == sorted(
        [(erased.id, "unsubscribed"), (active.id, "subscribed")], key=str
    )


def test_an_empty_batch_and_a_bad_channel(dbsession):
    assert prefs.apply_batch(dbsession, [], PROVIDER, now=NOW).changed == 0
    customer = make_customer(dbsession)
    with pytest.raises(InvalidInput):
        prefs.apply_batch(
            dbsession, [prefs.BatchChange(customer.id, channel="fax")], PROVIDER, now=NOW
        )
    assert dbsession.scalar(sa.select(sa.func.count()).select_from(ConsentLedgerEntry)) == 0


def test_suppress_many_adds_each_address_once_and_skips_unreadable_ones(dbsession):
    assert suppressions.suppress(dbsession, "email", "Ann@Example.com", "hard_bounce", cfg=CFG)

    added = suppressions.suppress_many(
        dbsession,
        "email",
        [
            ("ann@example.com", "hard_bounce", "sendgrid bounce"),  # already there
            ("bob@example.com", "hard_bounce", "sendgrid bounce"),
            (" BOB@example.com", "hard_bounce", "sendgrid dropped"),  # the same address
            ("bob@example.com", "spam_complaint", "sendgrid spamreport"),
            ("not an address@", "hard_bounce", None),
        ],
        cfg=CFG,
        now=NOW,
    )

    assert added == 2
    assert suppressions.is_suppressed(dbsession, "email", "bob@example.com", cfg=CFG) == [
        "hard_bounce",
        "spam_complaint",
    ]
    assert dbsession.scalar(sa.select(sa.func.count()).select_from(Suppression)) == 3
    with pytest.raises(InvalidInput):
        suppressions.suppress_many(dbsession, "email", [("c@example.com", "nope", None)], cfg=CFG)
