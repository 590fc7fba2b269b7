import datetime as dt
import hashlib

import pytest
import sqlalchemy as sa

from prefcenter.addresses import address_hmac
from prefcenter.consent_settings import ConsentSettings
from prefcenter.errors import InvalidInput
from prefcenter.models import (
    ChannelConsent,
    ConsentLedgerEntry,
    ContactPreference,
    Customer,
    TopicSubscription,
)
from prefcenter.services import preferences as prefs
from prefcenter.services.ledger import Actor, history
from tests.conftest import TEST_SECRET
from tests.factories import make_customer, make_topic

NOW = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
PROOF = {"source": "checkout form", "collected_at": "2026-02-28T18:30:00+01:00"}


@pytest.fixture
def cfg():
    return ConsentSettings(address_key=b"preferences-test-key-0123456789ab")


@pytest.fixture
def customer(dbsession):
    return make_customer(dbsession, email=None, phone=None)


@pytest.fixture
def me(customer):
    return Actor.customer(customer.id, ip="203.0.113.9", user_agent="Mobile Safari")


def _changes(session, customer):
    return [(e.field, e.before, e.after) for e in history(session, customer.id)]


def _state(session, customer):
    """Everything a preference call may change, read back from the database."""
    session.flush()

    def rows(model, *order):
        table = model.__table__
        query = sa.select(table).where(table.c.customer_id == customer.id).order_by(*order)
        return [
            {k: v for k, v in row._mapping.items() if k not in ("created_at", "updated_at")}
            for row in session.execute(query)
        ]

    customers = Customer.__table__
    person = session.execute(sa.select(customers).where(customers.c.id == customer.id)).one()
    return {
        "customer": {k: v for k, v in person._mapping.items() if k != "updated_at"},
        "consents": rows(ChannelConsent, ChannelConsent.channel),
        "subscriptions": rows(TopicSubscription, TopicSubscription.topic_id),
        "preference": rows(ContactPreference),
        "ledger": rows(ConsentLedgerEntry, ConsentLedgerEntry.id),
    }


def _consent(customer, channel):
    return prefs.consent_for(customer, channel)


def _with_email(session, customer, cfg, email="camille@example.com"):
    prefs.set_address(session, customer, "email", email, Actor.system("test"), cfg=cfg, now=NOW)


def _with_phone(session, customer, cfg, phone="+33612345678"):
    prefs.set_address(session, customer, "phone", phone, Actor.system("test"), cfg=cfg, now=NOW)


# --- every call: one ledger row per changed field, none for a no-op --------------------------


def _calls(session, customer, cfg, actor):
    """name -> (call, ledger fields the first call changes). Calling again must change nothing."""
    topic = make_topic(session, key="offers", regime="opt_in")
    newsletter = make_topic(session, key="newsletter", regime="opt_out")
    until = NOW + dt.timedelta(days=30)
    postal = {"line1": "3 rue Oberkampf", "postal_code": "75011", "city": "Paris", "country": "fr"}
    return {
        "email": (lambda: prefs.set_address(
            session, customer, "email", "Camille@Example.com", actor, cfg=cfg, now=NOW
        ), ["address.email"]),
        "phone": (lambda: prefs.set_address(
            session, customer, "phone", "06 12 34 56 78", actor, cfg=cfg, now=NOW
        ), ["address.phone"]),
        "postal": (lambda: prefs.set_address(
            session, customer, "postal", postal, actor, cfg=cfg, now=NOW
        ), ["address.postal"]),
        "grant proof": (lambda: prefs.grant_with_proof(
            session, customer, "email", actor, source="loyalty", proof=PROOF, notice_text="OK?",
            cfg=cfg, now=NOW,
        ), ["consent.email"]),
        "grant form": (lambda: prefs.grant_from_form(
            session, customer, "post", actor, notice_text="Letters?", cfg=cfg,
            secret=TEST_SECRET, now=NOW,
        ), ["consent.post"]),
        "refuse": (lambda: prefs.refuse(
            session, customer, "phone", actor, now=NOW
        ), ["consent.phone"]),
        "subscribe": (lambda: prefs.set_subscription(
            session, customer, topic, True, actor, now=NOW
        ), ["topic.offers"]),
        "topic frequency": (lambda: prefs.set_topic_frequency(
            session, customer, newsletter, "weekly", actor, now=NOW
        ), ["topic.newsletter", "topic_frequency.newsletter"]),
        "frequency": (lambda: prefs.set_frequency(
            session, customer, "monthly", actor, now=NOW
        ), ["frequency"]),
        "channel order": (lambda: prefs.set_channel_order(
            session, customer, ["sms", "email"], actor, now=NOW
        ), ["channel_order"]),
        "contact hours": (lambda: prefs.set_contact_hours(
            session, customer, 600, 1080, actor, now=NOW
        ), ["contact_hours"]),
        "timezone": (lambda: prefs.set_timezone(
            session, customer, "America/Martinique", actor, now=NOW
        ), ["timezone"]),
        "pause": (lambda: prefs.pause(
            session, customer, until, actor, now=NOW
        ), ["paused_until"]),
    }  # fmt: skip


CALL_NAMES = [
    "email",
    "phone",
    "postal",
    "grant proof",
    "grant form",
    "refuse",
    "subscribe",
    "topic frequency",
    "frequency",
    "channel order",
    "contact hours",
    "timezone",
    "pause",
]


@pytest.mark.parametrize("name", CALL_NAMES)
def test_each_change_writes_one_ledger_row_per_field_and_a_repeat_writes_none(
    dbsession, customer, cfg, me, name
):
    _with_email(dbsession, customer, cfg, "first@example.com")
    call, fields = _calls(dbsession, customer, cfg, me)[name]
    before = len(history(dbsession, customer.id))

    call()
    added = history(dbsession, customer.id)[before:]
    assert [e.field for e in added] == fields
    assert all((e.actor_type, e.actor_id) == ("customer", str(customer.id)) for e in added)
    assert all((e.ip, e.user_agent, e.at) == ("203.0.113.9", "Mobile Safari", NOW) for e in added)

    state = _state(dbsession, customer)
    call()
    assert _state(dbsession, customer) == state


def test_the_calls_cover_every_function(dbsession, customer, cfg, me):
    assert list(_calls(dbsession, customer, cfg, me)) == CALL_NAMES


def test_resume_writes_one_row_then_none(dbsession, customer, me):
    until = NOW + dt.timedelta(days=7)
    prefs.pause(dbsession, customer, until, me, now=NOW)

    prefs.resume(dbsession, customer, me, now=NOW + dt.timedelta(days=1))
    prefs.resume(dbsession, customer, me, now=NOW + dt.timedelta(days=2))

    assert _changes(dbsession, customer)[-1] == ("paused_until", until.isoformat(), None)
    assert len(history(dbsession, customer.id)) == 2
    assert customer.preference.paused_until is None


# --- rejected calls change nothing ------------------------------------------------------------


def _rejected(session, customer, cfg, actor):
    topic = make_topic(session, key="offers", regime="opt_in")
    retired = make_topic(session, key="retired", active=False)
    return {
        "bad email": (lambda: prefs.set_address(
            session, customer, "email", "camille@", actor, cfg=cfg, now=NOW
        ), "email", "invalid_email"),
        "bad phone": (lambda: prefs.set_address(
            session, customer, "phone", "0612", actor, cfg=cfg, now=NOW
        ), "phone", "invalid_phone"),
        "bad postal": (lambda: prefs.set_address(
            session, customer, "postal", {"line1": "1 rue X", "city": "Paris"}, actor,
            cfg=cfg, now=NOW,
        ), "postal.postal_code", "required"),
        "bad kind": (lambda: prefs.set_address(
            session, customer, "fax", "0145", actor, cfg=cfg, now=NOW
        ), "kind", "unknown_kind"),
        "proof without address": (lambda: prefs.grant_with_proof(
            session, customer, "sms", actor, source="api", proof=PROOF, cfg=cfg, now=NOW
        ), "sms", "no_address"),
        "proof from the future": (lambda: prefs.grant_with_proof(
            session, customer, "email", actor, source="api",
            proof={"source": "x", "collected_at": "2026-03-02T00:00:00+00:00"}, cfg=cfg, now=NOW,
        ), "proof.collected_at", "future"),
        "unknown channel": (lambda: prefs.refuse(session, customer, "fax", actor, now=NOW),
                            "channel", "unknown_channel"),
        "retired topic": (lambda: prefs.set_subscription(
            session, customer, retired, True, actor, now=NOW
        ), "topic.retired", "inactive"),
        "bad topic frequency": (lambda: prefs.set_topic_frequency(
            session, customer, topic, "daily", actor, now=NOW
        ), "topic_frequency.offers", "unknown_frequency"),
        "frequency of an unsubscribed opt-in topic": (lambda: prefs.set_topic_frequency(
            session, customer, topic, "weekly", actor, now=NOW
        ), "topic_frequency.offers", "not_subscribed"),
        "bad frequency": (lambda: prefs.set_frequency(session, customer, "hourly", actor, now=NOW),
                          "frequency", "unknown_frequency"),
        "unknown channel in order": (lambda: prefs.set_channel_order(
            session, customer, ["email", "fax"], actor, now=NOW
        ), "channel_order", "unknown_channel"),
        "duplicate channel in order": (lambda: prefs.set_channel_order(
            session, customer, ["email", "sms", "email"], actor, now=NOW
        ), "channel_order", "duplicate"),
        "empty window": (lambda: prefs.set_contact_hours(
            session, customer, 540, 540, actor, now=NOW
        ), "contact_hours", "empty_window"),
        "half a window": (lambda: prefs.set_contact_hours(
            session, customer, 540, None, actor, now=NOW
        ), "contact_hours", "incomplete"),
        "start out of range": (lambda: prefs.set_contact_hours(
            session, customer, 1440, 60, actor, now=NOW
        ), "contact_hours", "out_of_range"),
        "end out of range": (lambda: prefs.set_contact_hours(
            session, customer, 60, 1441, actor, now=NOW
        ), "contact_hours", "out_of_range"),
        "bad timezone": (lambda: prefs.set_timezone(session, customer, "Paris", actor, now=NOW),
                         "timezone", "unknown"),
        "pause in the past": (lambda: prefs.pause(
            session, customer, NOW - dt.timedelta(minutes=1), actor, now=NOW
        ), "paused_until", "past"),
        "naive pause": (lambda: prefs.pause(
            session, customer, dt.datetime(2026, 4, 1), actor, now=NOW
        ), "paused_until", "invalid_datetime"),
    }  # fmt: skip


REJECTED = [
    "bad email",
    "bad phone",
    "bad postal",
    "bad kind",
    "proof without address",
    "proof from the future",
    "unknown channel",
    "retired topic",
    "bad topic frequency",
    "frequency of an unsubscribed opt-in topic",
    "bad frequency",
    "unknown channel in order",
    "duplicate channel in order",
    "empty window",
    "half a window",
    "start out of range",
    "end out of range",
    "bad timezone",
    "pause in the past",
    "naive pause",
]


@pytest.mark.parametrize("name", REJECTED)
def test_a_rejected_call_names_the_field_and_changes_nothing(dbsession, customer, cfg, me, name):
    _with_email(dbsession, customer, cfg)
    prefs.set_frequency(dbsession, customer, "weekly", me, now=NOW)
    call, field, code = _rejected(dbsession, customer, cfg, me)[name]
    state = _state(dbsession, customer)

    with pytest.raises(InvalidInput) as caught:
        call()

    assert [(e.field, e.code) for e in caught.value.errors][:1] == [(field, code)]
    assert all(e.reason for e in caught.value.errors)
    assert _state(dbsession, customer) == state


def test_the_rejected_calls_are_all_listed(dbsession, customer, cfg, me):
    assert list(_rejected(dbsession, customer, cfg, me)) == REJECTED


def test_every_bad_field_is_reported_at_once(dbsession, customer, cfg, me):
    with pytest.raises(InvalidInput) as caught:
        prefs.set_address(
            dbsession,
            customer,
            "postal",
            {"line1": "", "postal_code": "7" * 30, "city": "Paris", "country": "France", "x": 1},
            me,
            cfg=cfg,
            now=NOW,
        )

    assert sorted(e.field for e in caught.value.errors) == [
        "postal.country",
        "postal.line1",
        "postal.postal_code",
        "postal.x",
    ]


# --- addresses -----------------------------------------------------------------------------


def test_an_email_is_stored_normalized_with_its_hmac_and_the_ledger_holds_no_address(
    dbsession, customer, cfg, me
):
    prefs.set_address(dbsession, customer, "email", " Camille@Example.COM ", me, cfg=cfg, now=NOW)

    expected = address_hmac(cfg.address_key, "email", "camille@example.com")
    assert (customer.email, customer.email_hmac) == ("camille@example.com", expected)
    [entry] = history(dbsession, customer.id)
    assert (entry.field, entry.before, entry.after) == ("address.email", None, expected)
    assert "camille" not in str(_state(dbsession, customer)["ledger"])


def test_a_national_phone_number_is_stored_in_e164(dbsession, customer, cfg, me):
    prefs.set_address(dbsession, customer, "phone", "06 12 34 56 78", me, cfg=cfg, now=NOW)

    assert customer.phone == "+33612345678"
    assert customer.phone_hmac == address_hmac(cfg.address_key, "phone", "+33612345678")


@pytest.mark.parametrize("empty", [None, ""])
def test_an_address_can_be_removed(dbsession, customer, cfg, me, empty):
    _with_phone(dbsession, customer, cfg)
    old = customer.phone_hmac

    prefs.set_address(dbsession, customer, "phone", empty, me, cfg=cfg, now=NOW)

    assert (customer.phone, customer.phone_hmac) == (None, None)
    assert _changes(dbsession, customer)[-1] == ("address.phone", old, None)


def test_changing_only_the_city_of_a_postal_address_is_a_recorded_change(
    dbsession, customer, cfg, me
):
    postal = {"line1": "3 rue Oberkampf", "postal_code": "75011", "city": "Paris"}
    prefs.set_address(dbsession, customer, "postal", postal, me, cfg=cfg, now=NOW)
    letterbox = customer.postal_hmac

    prefs.set_address(
        dbsession, customer, "postal", {**postal, "city": "PARIS 11"}, me, cfg=cfg, now=NOW
    )

    assert customer.city == "PARIS 11"
    assert customer.postal_hmac == letterbox
    assert [f for f, _, _ in _changes(dbsession, customer)] == ["address.postal"] * 2


def test_a_changed_email_takes_a_granted_email_back_to_pending(dbsession, customer, cfg, me):
    _with_email(dbsession, customer, cfg)
    prefs.grant_with_proof(
        dbsession, customer, "email", me, source="api", proof=PROOF, cfg=cfg, now=NOW
    )

    prefs.set_address(dbsession, customer, "email", "new@example.com", me, cfg=cfg, now=NOW)

    consent = _consent(customer, "email")
    assert consent.status == "pending"
    assert consent.confirmed_hmac != customer.email_hmac
    *_, address, reset = history(dbsession, customer.id)
    assert address.field == "address.email"
    assert (reset.field, reset.before, reset.after) == ("consent.email", "granted", "pending")
    assert reset.details == {"reason": "address_changed"}


def test_a_changed_phone_resets_sms_but_not_the_opt_out_phone_channel(dbsession, customer, cfg, me):
    _with_phone(dbsession, customer, cfg)
    for channel in ("sms", "phone"):
        prefs.grant_with_proof(
            dbsession, customer, channel, me, source="api", proof=PROOF, cfg=cfg, now=NOW
        )

    prefs.set_address(dbsession, customer, "phone", "+33698765432", me, cfg=cfg, now=NOW)

    assert _consent(customer, "sms").status == "pending"
    assert _consent(customer, "phone").status == "granted"
    assert [f for f, _, _ in _changes(dbsession, customer)][-2:] == [
        "address.phone",
        "consent.sms",
    ]


def test_the_same_email_in_another_case_is_not_a_change(dbsession, customer, cfg, me):
    _with_email(dbsession, customer, cfg, "camille@example.com")
    prefs.grant_with_proof(
        dbsession, customer, "email", me, source="api", proof=PROOF, cfg=cfg, now=NOW
    )
    state = _state(dbsession, customer)

    prefs.set_address(dbsession, customer, "email", "CAMILLE@example.com", me, cfg=cfg, now=NOW)

    assert _state(dbsession, customer) == state


# --- consent ----------------------------------------------------------------------------------


def test_a_grant_with_proof_keeps_the_proof_the_address_and_the_notice(
    dbsession, customer, cfg, me
):
    _with_email(dbsession, customer, cfg)
    api = Actor.api_key("Ab12Cd34", ip="198.51.100.4")

    prefs.grant_with_proof(
        dbsession,
        customer,
        "email",
        api,
        source="loyalty-app",
        proof={**PROOF, "text": "Je veux recevoir les offres"},
        notice_text="Recevoir nos offres par e-mail",
        cfg=cfg,
        now=NOW,
    )

    consent = _consent(customer, "email")
    notice_hash = hashlib.sha256(b"Recevoir nos offres par e-mail").hexdigest()
    assert (consent.status, consent.mechanism, consent.source) == (
        "granted",
        "api_proof",
        "loyalty-app",
    )
    assert (consent.confirmed_hmac, consent.granted_at) == (customer.email_hmac, NOW)
    assert consent.notice_hash == notice_hash
    entry = history(dbsession, customer.id)[-1]
    assert (entry.field, entry.before, entry.after) == ("consent.email", None, "granted")
    assert (entry.actor_type, entry.actor_id, entry.ip) == ("api_key", "Ab12Cd34", "198.51.100.4")
    assert entry.details == {
        "mechanism": "api_proof",
        "source": "loyalty-app",
        "proof": {
            "source": "checkout form",
            "collected_at": "2026-02-28T17:30:00+00:00",
            "text": "Je veux recevoir les offres",
        },
        "notice_hash": notice_hash,
    }


def test_a_portal_form_grants_an_opt_out_channel_at_once(dbsession, customer, cfg, me):
    result = prefs.grant_from_form(
        dbsession,
        customer,
        "phone",
        me,
        notice_text="Nous appeler",
        cfg=cfg,
        secret=TEST_SECRET,
        now=NOW,
    )

    assert result is None
    consent = _consent(customer, "phone")
    assert (consent.status, consent.mechanism, consent.granted_at) == (
        "granted",
        "portal_form",
        NOW,
    )
    entry = history(dbsession, customer.id)[-1]
    assert entry.details["mechanism"] == "portal_form"


def test_a_portal_form_does_not_grant_an_opt_in_channel_it_asks_for_confirmation(
    dbsession, customer, cfg, me
):
    _with_email(dbsession, customer, cfg)

    challenge = prefs.grant_from_form(
        dbsession, customer, "email", me, notice_text="Offres", cfg=cfg, secret=TEST_SECRET, now=NOW
    )

    assert challenge is not None and challenge.token
    assert _consent(customer, "email").status == "pending"
    assert _changes(dbsession, customer)[-1] == ("consent.email", None, "pending")


def test_refusing_appends_a_withdrawal_and_keeps_the_grant_row(dbsession, customer, cfg, me):
    _with_email(dbsession, customer, cfg)
    prefs.grant_with_proof(
        dbsession, customer, "email", me, source="api", proof=PROOF, cfg=cfg, now=NOW
    )
    grant = history(dbsession, customer.id)[-1]
    later = NOW + dt.timedelta(days=3)

    prefs.refuse(dbsession, customer, "email", me, now=later, source="one-click")

    consent = _consent(customer, "email")
    assert (consent.status, consent.refused_at, consent.source) == ("refused", later, "one-click")
    *_, kept, withdrawal = history(dbsession, customer.id)
    assert (kept.id, kept.after, kept.details["mechanism"]) == (grant.id, "granted", "api_proof")
    assert (withdrawal.before, withdrawal.after, withdrawal.at) == ("granted", "refused", later)
    assert withdrawal.details == {"source": "one-click"}


def test_an_erased_customer_can_withdraw_but_not_grant(dbsession, cfg):
    customer = make_customer(dbsession, erased_at=NOW, email=None)
    actor = Actor.system("erasure")

    prefs.refuse(dbsession, customer, "phone", actor, now=NOW)
    with pytest.raises(InvalidInput) as caught:
        prefs.grant_from_form(
            dbsession, customer, "post", actor, notice_text=None, cfg=cfg, secret="s", now=NOW
        )

    assert caught.value.errors[0].field == "customer"
    assert [f for f, _, _ in _changes(dbsession, customer)] == ["consent.phone"]


# --- topics, cadence, hours --------------------------------------------------------------------


def test_subscribing_and_unsubscribing_are_recorded(dbsession, customer, me):
    topic = make_topic(dbsession, key="alerts_points", kind="alert")

    prefs.set_subscription(dbsession, customer, topic, True, me, now=NOW)
    prefs.set_subscription(dbsession, customer, topic, False, me, now=NOW)

    assert _changes(dbsession, customer) == [
        ("topic.alerts_points", None, "subscribed"),
        ("topic.alerts_points", "subscribed", "unsubscribed"),
    ]
    assert customer.subscriptions[0].status == "unsubscribed"


def test_choosing_the_cadence_of_an_opt_out_topic_makes_the_subscription_explicit(
    dbsession, customer, me
):
    topic = make_topic(dbsession, key="newsletter", regime="opt_out")

    prefs.set_topic_frequency(dbsession, customer, topic, "monthly", me, now=NOW)
    prefs.set_topic_frequency(dbsession, customer, topic, None, me, now=NOW)

    assert _changes(dbsession, customer) == [
        ("topic.newsletter", None, "subscribed"),
        ("topic_frequency.newsletter", None, "monthly"),
        ("topic_frequency.newsletter", "monthly", None),
    ]
    [subscription] = customer.subscriptions
    assert (subscription.status, subscription.frequency) == ("subscribed", None)


def test_preferences_are_created_with_defaults_and_no_ledger_row(dbsession, customer):
    preference = prefs.ensure_preference(dbsession, customer)

    assert prefs.ensure_preference(dbsession, customer) is preference
    stored = dbsession.get(ContactPreference, customer.id)
    assert (stored.frequency, stored.channel_order, stored.contact_start, stored.paused_until) == (
        "any",
        "",
        None,
        None,
    )
    assert history(dbsession, customer.id) == []


def test_channel_order_is_stored_comma_separated_and_empty_means_default(dbsession, customer, me):
    prefs.set_channel_order(dbsession, customer, ["sms", "email", "post"], me, now=NOW)
    assert customer.preference.channels == ["sms", "email", "post"]

    prefs.set_channel_order(dbsession, customer, [], me, now=NOW)

    assert customer.preference.channel_order == ""
    assert _changes(dbsession, customer) == [
        ("channel_order", None, "sms,email,post"),
        ("channel_order", "sms,email,post", None),
    ]


def test_contact_hours_may_cross_midnight_and_go_back_to_the_default(dbsession, customer, me):
    prefs.set_contact_hours(dbsession, customer, 22 * 60, 8 * 60, me, now=NOW)
    prefs.set_contact_hours(dbsession, customer, 0, 1440, me, now=NOW)
    prefs.set_contact_hours(dbsession, customer, None, None, me, now=NOW)

    assert _changes(dbsession, customer) == [
        ("contact_hours", None, "22:00-08:00"),
        ("contact_hours", "22:00-08:00", "00:00-24:00"),
        ("contact_hours", "00:00-24:00", None),
    ]
    assert (customer.preference.contact_start, customer.preference.contact_end) == (None, None)


def test_timezone_and_frequency_changes_record_before_and_after(dbsession, customer, me):
    prefs.set_timezone(dbsession, customer, "Indian/Reunion", me, now=NOW)
    prefs.set_frequency(dbsession, customer, "weekly", me, now=NOW)

    assert customer.timezone == "Indian/Reunion"
    assert customer.preference.frequency == "weekly"
    assert _changes(dbsession, customer) == [
        ("timezone", "Europe/Paris", "Indian/Reunion"),
        ("frequency", "any", "weekly"),
    ]


def test_a_pause_is_stored_in_utc_and_recorded_in_iso(dbsession, customer, me):
    until = dt.datetime(2026, 4, 1, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))

    prefs.pause(dbsession, customer, until, me, now=NOW)

    assert dbsession.get(ContactPreference, customer.id).paused_until == until
    assert _changes(dbsession, customer) == [("paused_until", None, "2026-03-31T22:00:00+00:00")]
