import datetime as dt

import pytest

from prefcenter import tokens
from prefcenter.consent_settings import ConsentSettings
from prefcenter.errors import InvalidInput
from prefcenter.services.ledger import Actor, history
from prefcenter.services.preferences import (
    DOUBLE_OPT_IN_PURPOSE,
    ConfirmResult,
    confirm_double_opt_in,
    consent_for,
    double_opt_in_target,
    grant_from_form,
    grant_with_proof,
    refuse,
    set_address,
    start_double_opt_in,
)
from prefcenter.services.suppressions import suppress
from tests.conftest import TEST_SECRET
from tests.factories import make_customer

NOW = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
SOON = NOW + dt.timedelta(minutes=5)


@pytest.fixture
def cfg():
    return ConsentSettings(address_key=b"double-opt-in-test-key-0123456789")


@pytest.fixture
def customer(dbsession, cfg):
    customer = make_customer(dbsession, email=None, phone=None)
    system = Actor.system("test")
    set_address(dbsession, customer, "email", "lea@example.com", system, cfg=cfg, now=NOW)
    set_address(dbsession, customer, "phone", "+33612345678", system, cfg=cfg, now=NOW)
    return customer


@pytest.fixture
def me(customer):
    return Actor.customer(customer.id, ip="192.0.2.10")


def _start(session, customer, channel, actor, cfg, now=NOW):
    return start_double_opt_in(
        session, customer, channel, actor, cfg=cfg, secret=TEST_SECRET, now=now
    )


def _confirm(session, customer, channel, answer, actor, cfg, now=SOON):
    return confirm_double_opt_in(
        session, customer, channel, answer, actor, cfg=cfg, secret=TEST_SECRET, now=now
    )


def _wrong(code):
    return f"{(int(code) + 1) % 1_000_000:06d}"


def _consent_changes(session, customer, channel):
    return [
        (e.before, e.after)
        for e in history(session, customer.id)
        if e.field == f"consent.{channel}"
    ]


def test_email_double_opt_in_grants_consent_for_the_confirmed_address(dbsession, customer, cfg, me):
    challenge = _start(dbsession, customer, "email", me, cfg)

    assert (challenge.channel, challenge.code) == ("email", None)
    assert challenge.expires_at == NOW + dt.timedelta(hours=48)
    assert consent_for(customer, "email").status == "pending"

    result = _confirm(dbsession, customer, "email", challenge.token, me, cfg)

    assert result is ConfirmResult.CONFIRMED
    consent = consent_for(customer, "email")
    assert (consent.status, consent.mechanism, consent.granted_at) == (
        "granted",
        "double_opt_in",
        SOON,
    )
    assert consent.confirmed_hmac == customer.email_hmac
    assert (consent.confirmation_hash, consent.confirmation_expires_at) == (None, None)
    assert _consent_changes(dbsession, customer, "email") == [
        (None, "pending"),
        ("pending", "granted"),
    ]
    granted = history(dbsession, customer.id)[-1]
    assert (granted.actor_type, granted.ip, granted.at) == ("customer", "192.0.2.10", SOON)
    assert granted.details["mechanism"] == "double_opt_in"
    assert granted.details["confirmed_at"] == SOON.isoformat()


def test_sms_double_opt_in_with_a_six_digit_code_stored_only_as_an_hmac(
    dbsession, customer, cfg, me
):
    challenge = _start(dbsession, customer, "sms", me, cfg)

    assert challenge.token is None
    assert len(challenge.code) == 6 and challenge.code.isdigit()
    stored = consent_for(customer, "sms").confirmation_hash
    assert len(stored) == 128 and challenge.code not in stored

    spaced = f"{challenge.code[:3]} {challenge.code[3:]}"
    assert _confirm(dbsession, customer, "sms", spaced, me, cfg) is ConfirmResult.CONFIRMED
    assert consent_for(customer, "sms").confirmed_hmac == customer.phone_hmac


def test_a_wrong_code_is_counted_and_the_right_one_still_works(dbsession, customer, cfg, me):
    challenge = _start(dbsession, customer, "sms", me, cfg)

    assert _confirm(dbsession, customer, "sms", _wrong(challenge.code), me, cfg) == "wrong_code"

    consent = consent_for(customer, "sms")
    assert (consent.status, consent.confirmation_attempts) == ("pending", 1)
    assert _consent_changes(dbsession, customer, "sms") == [(None, "pending")]
    assert _confirm(dbsession, customer, "sms", challenge.code, me, cfg) == "confirmed"


def test_after_too_many_wrong_codes_even_the_right_one_is_refused_until_a_new_challenge(
    dbsession, customer, cfg, me
):
    challenge = _start(dbsession, customer, "sms", me, cfg)
    for _ in range(cfg.max_code_attempts):
        assert _confirm(dbsession, customer, "sms", _wrong(challenge.code), me, cfg) == (
            "wrong_code"
        )

    assert _confirm(dbsession, customer, "sms", challenge.code, me, cfg) == "too_many_attempts"
    assert consent_for(customer, "sms").status == "pending"

    fresh = _start(dbsession, customer, "sms", me, cfg, now=SOON)
    assert consent_for(customer, "sms").confirmation_attempts == 0
    assert _confirm(dbsession, customer, "sms", fresh.code, me, cfg) == "confirmed"


def test_a_code_is_refused_once_expired(dbsession, customer, cfg, me):
    challenge = _start(dbsession, customer, "sms", me, cfg)

    expired = _confirm(dbsession, customer, "sms", challenge.code, me, cfg, challenge.expires_at)

    assert expired is ConfirmResult.EXPIRED
    assert consent_for(customer, "sms").status == "pending"
    just_in_time = challenge.expires_at - dt.timedelta(seconds=1)
    assert _confirm(dbsession, customer, "sms", challenge.code, me, cfg, just_in_time) == (
        "confirmed"
    )


def test_an_email_link_is_refused_once_expired(dbsession, customer, cfg, me):
    challenge = _start(dbsession, customer, "email", me, cfg)
    late = challenge.expires_at + dt.timedelta(hours=1)

    assert _confirm(dbsession, customer, "email", challenge.token, me, cfg, late) == "expired"


def test_only_the_latest_challenge_works(dbsession, customer, cfg, me):
    first_code = _start(dbsession, customer, "sms", me, cfg).code
    first_link = _start(dbsession, customer, "email", me, cfg).token
    second_code = first_code
    while second_code == first_code:  # a one-in-a-million repeat would prove nothing
        second_code = _start(dbsession, customer, "sms", me, cfg).code
    second_link = _start(dbsession, customer, "email", me, cfg).token

    assert _confirm(dbsession, customer, "sms", first_code, me, cfg) == "wrong_code"
    assert _confirm(dbsession, customer, "email", first_link, me, cfg) == "wrong_code"
    assert _confirm(dbsession, customer, "sms", second_code, me, cfg) == "confirmed"
    assert _confirm(dbsession, customer, "email", second_link, me, cfg) == "confirmed"
    # Restarting a pending challenge is not a consent change.
    assert _consent_changes(dbsession, customer, "email") == [
        (None, "pending"),
        ("pending", "granted"),
    ]


def test_a_link_sent_to_a_previous_address_is_refused(dbsession, customer, cfg, me):
    old_link = _start(dbsession, customer, "email", me, cfg).token
    set_address(dbsession, customer, "email", "lea.new@example.com", me, cfg=cfg, now=NOW)

    assert _confirm(dbsession, customer, "email", old_link, me, cfg) == "address_changed"

    new_link = _start(dbsession, customer, "email", me, cfg).token
    assert _confirm(dbsession, customer, "email", old_link, me, cfg) == "address_changed"
    assert consent_for(customer, "email").status == "pending"
    assert _confirm(dbsession, customer, "email", new_link, me, cfg) == "confirmed"
    assert consent_for(customer, "email").confirmed_hmac == customer.email_hmac


def test_a_code_sent_to_a_previous_phone_is_refused(dbsession, customer, cfg, me):
    code = _start(dbsession, customer, "sms", me, cfg).code
    set_address(dbsession, customer, "phone", "+33698765432", me, cfg=cfg, now=NOW)

    assert _confirm(dbsession, customer, "sms", code, me, cfg) == "address_changed"
    assert consent_for(customer, "sms").status == "pending"


def test_a_token_for_another_purpose_or_customer_is_refused(dbsession, customer, cfg, me):
    challenge = _start(dbsession, customer, "email", me, cfg)
    payload = tokens.verify(TEST_SECRET, DOUBLE_OPT_IN_PURPOSE, challenge.token, now=NOW)
    portal_token = tokens.sign(TEST_SECRET, "portal", payload, challenge.expires_at)
    someone_else = tokens.sign(
        TEST_SECRET,
        DOUBLE_OPT_IN_PURPOSE,
        {**payload, "customer": "00000000-0000-0000-0000-000000000000"},
        challenge.expires_at,
    )

    assert _confirm(dbsession, customer, "email", portal_token, me, cfg) == "wrong_code"
    assert _confirm(dbsession, customer, "email", someone_else, me, cfg) == "wrong_code"
    assert _confirm(dbsession, customer, "email", "not-a-token", me, cfg) == "wrong_code"
    assert consent_for(customer, "email").confirmation_attempts == 3
    assert consent_for(customer, "email").status == "pending"


def test_an_email_link_does_not_confirm_sms(dbsession, customer, cfg, me):
    link = _start(dbsession, customer, "email", me, cfg).token
    _start(dbsession, customer, "sms", me, cfg)

    assert _confirm(dbsession, customer, "sms", link, me, cfg) == "wrong_code"


def test_the_portal_finds_the_customer_from_the_link(dbsession, customer, cfg, me):
    link = _start(dbsession, customer, "email", me, cfg).token

    assert double_opt_in_target(TEST_SECRET, link, now=SOON) == (customer.id, "email")
    with pytest.raises(tokens.BadToken):
        double_opt_in_target(TEST_SECRET, link + "x", now=SOON)


@pytest.mark.parametrize("reason", ["hard_bounce", "spam_complaint", "erased", "manual"])
def test_a_suppressed_address_is_never_sent_a_confirmation(dbsession, customer, cfg, me, reason):
    suppress(dbsession, "email", "LEA@example.com", reason, cfg=cfg, now=NOW)
    ledger = len(history(dbsession, customer.id))

    with pytest.raises(InvalidInput) as caught:
        _start(dbsession, customer, "email", me, cfg)

    [error] = caught.value.errors
    assert (error.field, error.reason, error.code) == (
        "email",
        "this address cannot receive messages",
        "suppressed",
    )
    assert consent_for(customer, "email") is None
    assert len(history(dbsession, customer.id)) == ledger


def test_the_phone_opposition_list_does_not_stop_an_sms_confirmation(dbsession, customer, cfg, me):
    suppress(dbsession, "phone", "+33612345678", "phone_opposition", cfg=cfg, now=NOW)

    assert _start(dbsession, customer, "sms", me, cfg).code


def test_no_confirmation_without_a_pending_challenge(dbsession, customer, cfg, me):
    assert _confirm(dbsession, customer, "sms", "123456", me, cfg) == "no_pending"

    code = _start(dbsession, customer, "sms", me, cfg).code
    refuse(dbsession, customer, "sms", me, now=NOW)

    assert _confirm(dbsession, customer, "sms", code, me, cfg) == "no_pending"
    assert consent_for(customer, "sms").status == "refused"


@pytest.mark.parametrize(
    ("channel", "field", "code"),
    [("post", "channel", "no_double_opt_in"), ("phone", "channel", "no_double_opt_in")],
)
def test_only_email_and_sms_can_be_confirmed(dbsession, customer, cfg, me, channel, field, code):
    with pytest.raises(InvalidInput) as caught:
        _start(dbsession, customer, channel, me, cfg)

    assert [(e.field, e.code) for e in caught.value.errors] == [(field, code)]


def test_no_confirmation_without_an_address(dbsession, cfg):
    customer = make_customer(dbsession, email=None, phone=None)

    with pytest.raises(InvalidInput) as caught:
        start_double_opt_in(
            dbsession, customer, "sms", Actor.system("t"), cfg=cfg, secret=TEST_SECRET, now=NOW
        )

    assert [(e.field, e.code) for e in caught.value.errors] == [("sms", "no_address")]
    assert consent_for(customer, "sms") is None


def test_a_granted_confirmed_channel_is_not_sent_back_to_pending(dbsession, customer, cfg, me):
    proof = {"source": "shop", "collected_at": NOW.isoformat()}
    grant_with_proof(dbsession, customer, "email", me, source="api", proof=proof, cfg=cfg, now=NOW)

    assert (
        grant_from_form(
            dbsession, customer, "email", me, notice_text="x", cfg=cfg, secret=TEST_SECRET, now=NOW
        )
        is None
    )
    with pytest.raises(InvalidInput) as caught:
        _start(dbsession, customer, "email", me, cfg)

    assert caught.value.errors[0].code == "already_granted"
    assert consent_for(customer, "email").status == "granted"


def test_a_refused_channel_can_be_granted_again_through_a_new_double_opt_in(
    dbsession, customer, cfg, me
):
    refuse(dbsession, customer, "email", me, now=NOW)

    challenge = grant_from_form(
        dbsession, customer, "email", me, notice_text="Offres", cfg=cfg, secret=TEST_SECRET, now=NOW
    )
    assert _confirm(dbsession, customer, "email", challenge.token, me, cfg) == "confirmed"

    assert _consent_changes(dbsession, customer, "email") == [
        (None, "refused"),
        ("refused", "pending"),
        ("pending", "granted"),
    ]
    assert history(dbsession, customer.id)[-1].details["notice_hash"]
