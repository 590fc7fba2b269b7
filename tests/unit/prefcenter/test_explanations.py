"""The policy's verdicts, told in French and English."""

import datetime as dt

import pytest

from prefcenter import explanations
from prefcenter.i18n import negotiate, translate
from prefcenter.models import PressureRule
from tests.factories import make_topic
from tests.policy_builders import consent, log_contact, preference, reachable_customer, settings

AT = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)  # Monday 10:00 in Paris
CFG = settings()


@pytest.fixture
def topic(dbsession):
    return make_topic(dbsession, key="offers", names={"fr": "Bons plans", "en": "Special offers"})


def explain(dbsession, customer, topic, locale, channel="email"):
    return explanations.explain(
        dbsession, customer, channel, topic, "marketing", AT, cfg=CFG, locale=locale
    )


def test_every_rule_is_explained_in_english(dbsession, topic):
    customer = reachable_customer(dbsession, topic)
    result = explain(dbsession, customer, topic, "en")
    assert result.decision.decision == "send"
    assert result.summary == "You would receive it now by email."
    assert [line.rule for line in result.lines] == [
        "erased",
        "suppressed",
        "unreachable",
        "no_consent",
        "topic_unsubscribed",
        "paused",
        "frequency_cap",
        "quiet_hours",
    ]
    assert all(line.passed for line in result.lines)
    texts = [line.text for line in result.lines]
    assert "You are subscribed to “Special offers”." in texts
    assert "You agreed to receive messages by email." in texts


def test_french_explanations(dbsession, topic):
    customer = reachable_customer(dbsession, topic)
    consent(dbsession, customer, "email").status = "refused"
    result = explain(dbsession, customer, topic, "fr")
    assert result.summary == "Vous ne le recevriez pas par e-mail."
    refused = next(line for line in result.lines if line.rule == "no_consent")
    assert (refused.passed, refused.text) == (False, "Vous avez refusé les messages par e-mail.")
    topic_line = next(line for line in result.lines if line.rule == "topic_unsubscribed")
    assert topic_line.text == "Vous êtes abonné(e) à « Bons plans »."


def test_the_customers_locale_is_the_default(dbsession, topic):
    customer = reachable_customer(dbsession, topic, locale="en")
    assert explain(dbsession, customer, topic, None).summary.startswith("You would")


def test_deferral_and_pause_give_local_times(dbsession, topic):
    customer = reachable_customer(dbsession, topic, hours=(18 * 60, 21 * 60))
    result = explain(dbsession, customer, topic, "fr")
    assert result.summary == "Vous le recevriez par e-mail le lundi 23 novembre, 18:00."
    preference(dbsession, customer).paused_until = dt.datetime(2026, 12, 24, 23, tzinfo=dt.UTC)
    result = explain(dbsession, customer, topic, "en")
    paused = next(line for line in result.lines if line.rule == "paused")
    assert paused.text == "You paused marketing messages until Friday 25 December, 00:00."


def test_caps_say_which_limit(dbsession, topic):
    customer = reachable_customer(dbsession, topic, frequency="weekly")
    dbsession.add(PressureRule(channel=None, period_days=7, max_messages=1))
    log_contact(dbsession, customer, AT - dt.timedelta(days=2))
    line = next(
        line
        for line in explain(dbsession, customer, topic, "en").lines
        if line.rule == "frequency_cap"
    )
    assert not line.passed
    assert "at most one message per week" in line.text
    assert "The brand limits itself to 1 messages per 7 days" in line.text


def test_missing_and_unconfirmed_addresses_are_told_apart(dbsession, topic):
    customer = reachable_customer(dbsession, topic)
    consent(dbsession, customer, "email").confirmed_hmac = None
    unconfirmed = explain(dbsession, customer, topic, "en").lines[2]
    assert unconfirmed.text == "Your email address has not been confirmed yet."
    customer.phone = None
    customer.phone_hmac = None
    missing = explain(dbsession, customer, topic, "en", channel="sms").lines[2]
    assert missing.text == "We have no SMS address for you."


@pytest.mark.parametrize(
    ("candidates", "expected"),
    [
        (("en-GB",), "en"),
        (("fr_FR",), "fr"),
        (("de", "en"), "en"),
        (("de",), "fr"),
        ((None,), "fr"),
    ],
)
def test_locale_negotiation(candidates, expected):
    assert negotiate(*candidates) == expected


def test_every_message_has_a_french_translation():
    from babel.messages import pofile

    from prefcenter.i18n import LOCALE_DIR

    with (LOCALE_DIR / "fr" / "LC_MESSAGES" / "prefcenter.po").open("rb") as po:
        catalog = pofile.read_po(po)
    untranslated = [m.id for m in catalog if m.id and not m.string]
    assert untranslated == []
    assert translate("per week", "fr") == "par semaine"


def test_catalogs_hold_every_translatable_string_of_the_code():
    """A string marked with _() but missing from the catalogs: run `make messages`."""
    from pathlib import Path

    from babel.messages import pofile
    from babel.messages.extract import extract_from_dir

    from prefcenter.i18n import LOCALE_DIR

    root = Path(__file__).resolve().parents[3]
    method_map = [
        ("prefcenter/**.py", "python"),
        ("campaigns/**.py", "python"),
        ("prefcenter/**/templates/**.html", "jinja2"),
        ("campaigns/**/templates/**.html", "jinja2"),
    ]
    found = {
        message if isinstance(message, str) else message[0]
        for _file, _line, message, _comments, _context in extract_from_dir(
            str(root), method_map, keywords={"_": None}
        )
    }
    with (LOCALE_DIR / "fr" / "LC_MESSAGES" / "prefcenter.po").open("rb") as po:
        catalog = {m.id for m in pofile.read_po(po) if m.id}
    assert found - catalog == set()
