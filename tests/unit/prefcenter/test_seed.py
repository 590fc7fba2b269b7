"""The demo data set, seeded once per backend (it takes a couple of seconds)."""

import datetime as dt
import re
from collections import Counter

import phonenumbers
import pytest
import sqlalchemy as sa
from phonenumbers import PhoneNumberType
from sqlalchemy.orm import Session

from prefcenter.addresses import normalize_phone
from prefcenter.consent_settings import ConsentSettings
from prefcenter.models import (
    Base,
    ChannelConsent,
    ConsentLedgerEntry,
    ContactPreference,
    Customer,
    Interaction,
    Topic,
    TopicSubscription,
)
from prefcenter.models.vocabulary import API_SCOPES
from prefcenter.seed import DEMO_API_KEY, DEMO_LOGINS, TABLES, seed_demo
from prefcenter.services.apikeys import find_api_key
from prefcenter.services.gdpr import erase_customer
from prefcenter.services.ledger import Actor
from prefcenter.services.preferences import customer_timezones, set_address
from prefcenter.services.suppressions import current_address_hmac
from prefcenter.services.users import authenticate

NOW = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)
CFG = ConsentSettings(address_key=b"address-hmac-key-for-the-seed-tests")


@pytest.fixture(scope="module")
def seeded(engine):
    """One seeded transaction per backend, rolled back after this module's tests.

    Every test here uses it: on SQLite a second connection could not write meanwhile.
    """
    with engine.connect() as connection:
        outer = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        summary = seed_demo(session, now=NOW, cfg=CFG)
        yield session, summary
        session.close()
        outer.rollback()


def scalar(session, statement):
    return session.scalar(statement)


def count(session, model, *where):
    return session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


def test_first_run_inserts_the_whole_data_set(seeded):
    session, summary = seeded
    assert summary.inserted == summary.totals
    assert summary.totals["topics"] == 6
    assert summary.totals["customers"] == 2400
    assert summary.totals["contact_preferences"] == 2400
    assert summary.totals["users"] == 2
    assert summary.totals["api_keys"] == 1
    assert summary.totals["consent_ledger"] == (
        summary.totals["channel_consents"] + summary.totals["topic_subscriptions"]
    )
    assert 10_000 < summary.totals["interactions"] < 25_000
    assert count(session, Customer) == 2400


def test_second_run_inserts_nothing(seeded):
    session, first = seeded
    second = seed_demo(session, now=NOW + dt.timedelta(days=3), cfg=CFG)
    assert second.inserted == dict.fromkeys(TABLES, 0)
    assert second.totals == first.totals


def test_second_run_adds_nothing_after_customers_were_erased_or_changed(seeded):
    """Erasure blanks the external id: the seed must still know the person (and never
    bring an erased customer back); changed addresses or member ids are the same person."""
    session, first = seeded
    savepoint = session.begin_nested()
    try:
        erased, moved, renamed = session.scalars(
            sa.select(Customer).order_by(Customer.external_id).limit(3)
        ).all()
        erased_member_id = erased.external_id
        actor = Actor.system("test")
        erase_customer(session, erased, actor, cfg=CFG, now=NOW)
        set_address(session, moved, "email", "moved@example.net", actor, cfg=CFG, now=NOW)
        set_address(session, moved, "phone", None, actor, cfg=CFG, now=NOW)
        renamed.external_id = "LOYALTY-42"
        session.execute(sa.update(Topic).where(Topic.key == "newsletter").values(key="letter"))
        session.flush()
        customers_before = count(session, Customer)

        second = seed_demo(session, now=NOW + dt.timedelta(days=3), cfg=CFG)
        third = seed_demo(session, now=NOW + dt.timedelta(days=4), cfg=CFG)

        assert second.inserted == third.inserted == dict.fromkeys(TABLES, 0)
        assert count(session, Customer) == customers_before == first.totals["customers"]
        session.expire_all()
        assert session.get(Customer, erased.id).erased_at is not None
        assert count(session, Customer, Customer.external_id == erased_member_id) == 0
        assert session.get(Customer, moved.id).email == "moved@example.net"
        assert session.get(Customer, renamed.id).external_id == "LOYALTY-42"
    finally:
        savepoint.rollback()
        session.expire_all()


def test_topics_have_french_and_english_names_and_descriptions(seeded):
    session, _ = seeded
    topics = {t.key: t for t in session.scalars(sa.select(Topic))}
    assert set(topics) == {
        "offers_fashion",
        "offers_home",
        "offers_beauty",
        "newsletter",
        "loyalty_alerts",
        "order_updates",
    }
    for topic in topics.values():
        assert set(topic.names) == {"fr", "en"} and all(topic.names.values())
        assert set(topic.descriptions) == {"fr", "en"} and all(topic.descriptions.values())
    assert (topics["newsletter"].kind, topics["newsletter"].regime) == ("marketing", "opt_in")
    assert (topics["loyalty_alerts"].kind, topics["loyalty_alerts"].regime) == ("alert", "opt_in")
    assert (topics["order_updates"].kind, topics["order_updates"].regime) == ("alert", "opt_out")


def test_customers_look_like_french_and_british_customers(seeded):
    session, _ = seeded
    customers = session.scalars(sa.select(Customer)).all()
    n = len(customers)

    locales = Counter(c.locale for c in customers)
    assert 0.65 < locales["fr"] / n < 0.75 and locales["fr"] + locales["en"] == n

    emails = [c.email for c in customers]
    assert len(set(emails)) == n
    assert all(re.fullmatch(r"[a-z0-9.]+@example\.(com|org|fr)", email) for email in emails), (
        "only reserved example domains"
    )

    phones = [c for c in customers if c.phone]
    assert 0.55 < len(phones) / n < 0.65
    assert len({c.phone for c in phones}) == len(phones)
    for c in phones:
        pattern = r"\+33612\d{6}" if c.locale == "fr" else r"\+447400\d{6}"
        assert re.fullmatch(pattern, c.phone), c.phone

    with_address = [c for c in customers if c.has_postal_address]
    assert 0.40 < len(with_address) / n < 0.55
    countries = Counter(c.country for c in with_address)
    assert countries["FR"] > 0.8 * len(with_address) and countries["GB"] > 0

    zones = Counter(c.timezone for c in customers)
    assert zones["Europe/Paris"] > 0.6 * n
    for zone in (
        "Europe/London",
        "America/Toronto",
        "Indian/Reunion",
        "America/Guadeloupe",
        "Pacific/Noumea",
    ):
        assert zones[zone] > 0, zone

    assert {c.attributes["tier"] for c in customers} == {"bronze", "silver", "gold"}
    assert {c.attributes["favourite_category"] for c in customers} == {"fashion", "home", "beauty"}
    assert all(isinstance(c.attributes["points"], int) for c in customers)
    assert all(
        c.external_id == f"DEMO-{i:06d}"
        for i, c in enumerate(sorted(customers, key=lambda c: c.external_id), 1)
    )


def test_every_seeded_phone_passes_the_app_phone_validation(seeded):
    """The portal, the call-back form and the API all check numbers with normalize_phone:
    a demo customer must be able to save their own number and ask for a call back."""
    session, _ = seeded
    phones = session.scalars(sa.select(Customer.phone).where(Customer.phone.is_not(None))).all()
    assert phones
    for phone in phones:
        assert normalize_phone(phone) == phone
        number = phonenumbers.parse(phone)
        assert phonenumbers.number_type(number) == PhoneNumberType.MOBILE, phone


def test_every_seeded_timezone_is_one_the_portal_offers(seeded):
    session, _ = seeded
    zones = set(session.scalars(sa.select(Customer.timezone).distinct()))
    assert zones and zones <= set(customer_timezones())


def test_channel_consents_follow_the_specified_proportions(seeded):
    session, _ = seeded
    n = count(session, Customer)
    rows = session.execute(
        sa.select(ChannelConsent.channel, ChannelConsent.status, sa.func.count()).group_by(
            ChannelConsent.channel, ChannelConsent.status
        )
    ).all()
    by = {(channel, status): number for channel, status, number in rows}
    with_phone = count(session, Customer, Customer.phone.is_not(None))

    assert 0.60 < by[("email", "granted")] / n < 0.70
    assert 0.03 < by[("email", "pending")] / n < 0.07
    assert 0.12 < by[("email", "refused")] / n < 0.18
    no_email_row = n - sum(v for (channel, _), v in by.items() if channel == "email")
    assert 0.12 < no_email_row / n < 0.18
    assert 0.30 < by[("sms", "granted")] / with_phone < 0.40
    assert by[("sms", "refused")] > 0
    assert 0.07 < by[("phone", "refused")] / with_phone < 0.13
    assert by[("post", "refused")] > 0
    # Phone and post are opt-out: the data set only records refusals for them.
    assert not {("phone", "granted"), ("post", "granted")} & set(by)


def test_consent_times_are_set(seeded):
    session, _ = seeded
    consents = session.scalars(sa.select(ChannelConsent)).all()
    for consent in consents:
        assert (consent.granted_at is not None) == (consent.status == "granted")
        assert (consent.refused_at is not None) == (consent.status == "refused")
        assert (consent.granted_at or consent.refused_at or NOW) <= NOW


def test_every_consent_and_subscription_has_its_ledger_row(seeded):
    session, _ = seeded
    ledger = ConsentLedgerEntry
    consent_without_entry = count(
        session,
        ChannelConsent,
        ~sa.exists().where(
            ledger.customer_id == ChannelConsent.customer_id,
            ledger.field == sa.literal("consent.") + sa.cast(ChannelConsent.channel, sa.String),
            ledger.after == ChannelConsent.status,
            ledger.before.is_(None),
            ledger.actor_type == "system",
            ledger.actor_id == "seed-demo",
        ),
    )
    assert consent_without_entry == 0
    subscription_without_entry = count(
        session,
        TopicSubscription,
        ~sa.exists().where(
            ledger.customer_id == TopicSubscription.customer_id,
            ledger.field == sa.literal("topic.") + Topic.key,
            Topic.id == TopicSubscription.topic_id,
            ledger.after == TopicSubscription.status,
        ),
    )
    assert subscription_without_entry == 0
    entry = session.scalars(sa.select(ledger).limit(1)).one()
    assert entry.details == {"mechanism": "demo seed"}


def test_subscriptions_and_preferences(seeded):
    session, _ = seeded
    n = count(session, Customer)
    statuses = Counter(session.scalars(sa.select(TopicSubscription.status)))
    assert statuses["subscribed"] > statuses["unsubscribed"] > 0
    assert count(session, TopicSubscription, TopicSubscription.frequency.is_not(None)) > 0

    preferences = session.execute(sa.select(ContactPreference, Customer).join(Customer)).all()
    assert len(preferences) == n
    frequencies = Counter(p.frequency for p, _ in preferences)
    assert 0.45 < frequencies["any"] / n < 0.55
    assert 0.25 < frequencies["weekly"] / n < 0.35
    assert 0.15 < frequencies["monthly"] / n < 0.25
    for preference, customer in preferences:
        usable = {"email"}
        if customer.phone:
            usable |= {"sms", "phone"}
        if customer.has_postal_address:
            usable.add("post")
        assert sorted(preference.channels) == sorted(usable)
        assert 0 <= preference.contact_start < 1440 and 0 <= preference.contact_end <= 1440
    crossing = [p for p, _ in preferences if p.contact_start > p.contact_end]
    assert 0 < len(crossing) < 0.1 * n
    paused = [p for p, _ in preferences if p.paused_until is not None]
    assert 0 < len(paused) < 0.1 * n and all(p.paused_until > NOW for p in paused)


def test_about_a_third_of_customers_are_dormant(seeded):
    session, _ = seeded
    n = count(session, Customer)
    cutoff = NOW - dt.timedelta(days=180)
    dormant = count(
        session,
        Customer,
        sa.or_(Customer.last_interaction_at.is_(None), Customer.last_interaction_at < cutoff),
    )
    assert 0.25 < dormant / n < 0.35
    assert count(session, Customer, Customer.last_interaction_at.is_(None)) > 0


def test_interactions_span_two_years_with_seed_keys(seeded):
    session, _ = seeded
    oldest, newest = session.execute(
        sa.select(sa.func.min(Interaction.occurred_at), sa.func.max(Interaction.occurred_at))
    ).one()
    assert NOW - dt.timedelta(days=731) <= oldest < NOW - dt.timedelta(days=600)
    assert NOW - dt.timedelta(days=2) < newest <= NOW
    kinds = Counter(session.scalars(sa.select(Interaction.kind)))
    assert set(kinds) == {"purchase", "loyalty_activity", "visit"}
    assert count(session, Interaction, Interaction.source != "seed-demo") == 0
    assert count(session, Interaction, ~Interaction.idempotency_key.like("seed-%")) == 0


def test_last_interaction_at_is_the_latest_interaction(seeded):
    session, _ = seeded
    latest = (
        sa.select(sa.func.max(Interaction.occurred_at))
        .where(Interaction.customer_id == Customer.id)
        .scalar_subquery()
    )
    rows = session.execute(sa.select(Customer.last_interaction_at, latest)).all()
    assert rows and all(stored == computed for stored, computed in rows)


def test_addresses_carry_their_hmacs_and_granted_email_and_sms_are_confirmed(seeded):
    session, _ = seeded
    customers = {c.id: c for c in session.scalars(sa.select(Customer))}
    for c in customers.values():
        assert c.email_hmac == current_address_hmac(c, "email", CFG) is not None
        assert c.phone_hmac == current_address_hmac(c, "phone", CFG)
        assert c.postal_hmac == current_address_hmac(c, "postal", CFG)
        assert (c.phone_hmac is None) == (c.phone is None)
        assert (c.postal_hmac is None) == (c.postal_line1 is None)
    for consent in session.scalars(sa.select(ChannelConsent)):
        customer = customers[consent.customer_id]
        if consent.status == "granted" and consent.channel == "email":
            assert consent.confirmed_hmac == customer.email_hmac
        elif consent.status == "granted" and consent.channel == "sms":
            assert consent.confirmed_hmac == customer.phone_hmac
        elif consent.status == "pending" or consent.channel in ("phone", "post"):
            assert consent.confirmed_hmac is None
    refused = session.scalars(
        sa.select(ChannelConsent).where(
            ChannelConsent.status == "refused", ChannelConsent.channel == "email"
        )
    ).all()
    confirmed = [c for c in refused if c.confirmed_hmac is not None]
    assert 0 < len(confirmed) < len(refused), "some refusals follow a proven address"
    assert all(c.confirmed_hmac == customers[c.customer_id].email_hmac for c in confirmed)


def test_demo_log_ins_and_api_key_work(seeded):
    session, _ = seeded
    for login in DEMO_LOGINS:
        user = authenticate(session, login.email, login.password)
        assert user is not None and user.role == login.role
    api_key = find_api_key(session, DEMO_API_KEY)
    assert api_key is not None
    assert set(api_key.scopes) == set(API_SCOPES)


def _seed_fresh_database(customers: int) -> list[tuple]:
    engine = sa.create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        seed_demo(session, now=NOW, cfg=CFG, customers=customers)
        rows = session.execute(
            sa.select(Customer.id, Customer.email, Customer.phone, Customer.attributes).order_by(
                Customer.external_id
            )
        ).all()
        keys = session.scalars(sa.select(Interaction.idempotency_key).order_by(Interaction.id))
        result = [*map(tuple, rows), *keys]
    engine.dispose()
    return result


def test_the_data_set_is_the_same_on_every_database():
    assert _seed_fresh_database(40) == _seed_fresh_database(40)
