"""Every portal page and every change it offers, with its error paths, in both languages."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
import sqlalchemy as sa

from prefcenter.models import (
    CallbackRequest,
    ChannelConsent,
    ConsentLedgerEntry,
    Customer,
    Interaction,
    utcnow,
)
from tests.factories import make_customer, make_topic
from tests.functional.portal.conftest import BROWSER, confirm_email, log_in


def ledger(dbsession, customer, field=None):
    query = sa.select(ConsentLedgerEntry).where(ConsentLedgerEntry.customer_id == customer.id)
    if field:
        query = query.where(ConsentLedgerEntry.field == field)
    return dbsession.scalars(query.order_by(ConsentLedgerEntry.id)).all()


def fresh(dbsession, customer) -> Customer:
    dbsession.expire_all()
    return dbsession.get(Customer, customer.id)


def consent_status(dbsession, customer, channel):
    dbsession.expire_all()
    return dbsession.scalar(
        sa.select(ChannelConsent.status).where(
            ChannelConsent.customer_id == customer.id, ChannelConsent.channel == channel
        )
    )


@pytest.fixture
def offers(dbsession):
    return make_topic(
        dbsession,
        key="offers",
        names={"fr": "Bons plans", "en": "Deals"},
        descriptions={"fr": "Nos promotions", "en": "Our promotions"},
        regime="opt_out",
    )


@pytest.fixture
def news(dbsession):
    return make_topic(dbsession, key="news", names={"fr": "Actualités", "en": "News"})


@pytest.fixture
def camille(dbsession):
    return make_customer(dbsession, email="camille@example.com", phone="+33612345678")


def last_form(page):
    return page.forms[max(k for k in page.forms if isinstance(k, int))]


def only_h1(page) -> str:
    headings = page.html.find_all("h1")
    assert len(headings) == 1
    return headings[0].text


# --- what you will receive ---------------------------------------------------------------


def test_home_tells_channel_frequency_and_when_for_each_topic_in_french(
    portal, dbsession, camille, offers, news
):
    log_in(portal, camille)
    page = portal.get("/portal")
    assert only_h1(page) == "Ce que vous recevrez"
    cards = page.html.select("li.card")
    assert [c.h2.text for c in cards] == ["Actualités", "Bons plans"]
    deals = cards[1].text
    # Post is opt-out and the postal address is missing; email is opt-in and not granted.
    assert "Au fil de l\u2019eau" in deals
    # Email and SMS are opt-in and not granted; phone is opt-out: the policy picks it.
    assert cards[1].find("dd").text == "téléphone"
    assert "Vous ne le recevriez pas par e-mail" in cards[0].text
    assert "Vous n\u2019êtes pas abonné(e) à « Actualités »" in cards[0].text


def test_home_in_english_after_switching_language(portal, dbsession, camille, offers):
    log_in(portal, camille)
    page = portal.get("/portal?lang=en")
    assert only_h1(page) == "What you will receive"
    assert page.html.html["lang"] == "en"
    assert "Deals" in page.text and "Our promotions" in page.text
    # The choice sticks for the next pages.
    assert only_h1(portal.get("/portal/channels")) == "Channels"


def test_home_shows_the_chosen_channel_when_the_policy_allows_it(portal, dbsession, offers):
    customer = make_customer(
        dbsession, postal_line1="1 rue de la Paix", postal_code="75002", city="Paris", country="FR"
    )
    log_in(portal, customer, lang="en")
    card = portal.get("/portal").html.select_one("li.card")
    assert "postal mail" in card.find("dd").text
    assert "off" not in card["class"]


def test_language_comes_from_accept_language_before_login(portal):
    page = portal.get("/portal/login", headers={"Accept-Language": "en-GB,en;q=0.9"})
    assert only_h1(page) == "Access your preferences"
    page = portal.get("/portal/login", headers={"Accept-Language": "de-DE"})
    assert only_h1(page) == "Accéder à vos préférences"


def test_language_comes_from_the_customer_locale(portal, dbsession):
    customer = make_customer(dbsession, locale="en")
    log_in(portal, customer)
    assert only_h1(portal.get("/portal")) == "What you will receive"


# --- channels ----------------------------------------------------------------------------


def test_channels_page_has_labelled_controls_and_fieldsets(portal, camille):
    log_in(portal, camille)
    page = portal.get("/portal/channels")
    assert only_h1(page) == "Canaux"
    for field in page.html.select("input:not([type=hidden]), select, textarea"):
        assert page.html.find("label", attrs={"for": field["id"]}), field
    assert len(page.html.select("fieldset > legend")) >= 7


def test_sms_double_opt_in_with_the_code(portal, courier, dbsession, camille):
    log_in(portal, camille)
    page = portal.get("/portal/channels")
    grant = next(f for f in page.forms.values() if f.action.endswith("/channels/sms/grant"))
    grant.submit(status=303)
    assert consent_status(dbsession, camille, "sms") == "pending"
    code = courier.last("confirm_sms").code
    assert code and len(code) == 6

    page = portal.get("/portal/channels")
    confirm = next(f for f in page.forms.values() if f.action.endswith("/channels/sms/confirm"))
    confirm["code"] = "000000" if code != "000000" else "111111"
    wrong = confirm.submit(status=400)
    assert "Ce code n\u2019est pas celui" in wrong.text
    confirm = next(f for f in wrong.forms.values() if f.action.endswith("/channels/sms/confirm"))
    confirm["code"] = code
    confirm.submit(status=303).follow()
    assert consent_status(dbsession, camille, "sms") == "granted"
    granted = ledger(dbsession, camille, "consent.sms")[-1]
    assert (granted.before, granted.after) == ("pending", "granted")
    assert (granted.ip, granted.user_agent) == (BROWSER["REMOTE_ADDR"], BROWSER["HTTP_USER_AGENT"])


def test_email_double_opt_in_with_the_link(portal, courier, dbsession, camille):
    log_in(portal, camille)
    page = portal.get("/portal/channels")
    grant = next(f for f in page.forms.values() if f.action.endswith("/channels/email/grant"))
    grant.submit(status=303)
    link = courier.last("confirm_email").link.replace("http://localhost", "")
    assert "@" not in link
    ask = portal.get(link)
    assert consent_status(dbsession, camille, "email") == "pending"  # GET changes nothing
    last_form(ask).submit(status=200)
    assert consent_status(dbsession, camille, "email") == "granted"


def test_email_confirmation_with_a_tampered_link(portal, dbsession, camille):
    page = portal.get("/portal/confirm/abc.def", status=400)
    assert "Rien n\u2019a été modifié" in page.text


def test_opt_out_channel_granted_at_once_and_refused(portal, dbsession, camille):
    log_in(portal, camille)
    page = portal.get("/portal/channels")
    next(f for f in page.forms.values() if f.action.endswith("/channels/post/grant")).submit(
        status=303
    )
    assert consent_status(dbsession, camille, "post") == "granted"
    page = portal.get("/portal/channels")
    next(f for f in page.forms.values() if f.action.endswith("/channels/post/refuse")).submit(
        status=303
    )
    assert consent_status(dbsession, camille, "post") == "refused"
    assert [e.after for e in ledger(dbsession, camille, "consent.post")] == ["granted", "refused"]


def test_change_email_needs_confirmation_again(portal, courier, dbsession, camille):
    log_in(portal, camille)
    page = portal.get("/portal/channels")
    next(f for f in page.forms.values() if f.action.endswith("/channels/email/grant")).submit()
    link = courier.last("confirm_email").link.replace("http://localhost", "")
    last_form(portal.get(link)).submit()
    assert consent_status(dbsession, camille, "email") == "granted"

    page = portal.get("/portal/channels")
    form = next(f for f in page.forms.values() if f.action.endswith("/address/email"))
    form["email"] = "new@example.com"
    form.submit(status=303)
    assert fresh(dbsession, camille).email == "new@example.com"
    assert consent_status(dbsession, camille, "email") == "pending"
    entry = ledger(dbsession, camille, "address.email")[-1]
    assert "new@example.com" not in (entry.after or "")


def _address_form(page, kind):
    return next(f for f in page.forms.values() if f.action.endswith(f"/address/{kind}"))


def test_new_email_of_a_consenting_customer_gets_a_confirmation(
    app, portal, courier, dbsession, camille
):
    confirm_email(app, dbsession, camille)
    log_in(portal, camille, lang="en")
    form = _address_form(portal.get("/portal/channels"), "email")
    form["email"] = "new@example.com"
    page = form.submit(status=303).follow()
    sent = courier.last("confirm_email")
    assert (sent.to, sent.customer_id) == ("new@example.com", camille.id)
    flash = page.html.select_one(".flash").text
    assert "We sent a confirmation email to new@example.com" in flash
    assert "Send a new confirmation" in page.text
    assert consent_status(dbsession, camille, "email") == "pending"

    # The link in that email confirms the new address.
    last_form(portal.get(sent.link.replace("http://localhost", ""))).submit(status=200)
    assert consent_status(dbsession, camille, "email") == "granted"
    assert fresh(dbsession, camille).email == "new@example.com"


def test_a_pending_consent_with_nothing_sent_does_not_offer_to_send_again(portal, dbsession):
    customer = make_customer(dbsession)
    dbsession.add(ChannelConsent(customer_id=customer.id, channel="email", status="pending"))
    dbsession.flush()
    log_in(portal, customer, lang="en")
    email = portal.get("/portal/channels").html.select_one("#channel-email")
    assert "Status: not confirmed yet. Ask for a confirmation below." in email.text
    assert "Send a new confirmation" not in email.text
    assert "Yes, I agree to receive marketing messages by email." in email.text


def test_re_entering_the_confirmed_email_changes_nothing(app, portal, courier, dbsession, camille):
    confirm_email(app, dbsession, camille)
    rows = len(ledger(dbsession, camille))
    log_in(portal, camille, lang="en")
    form = _address_form(portal.get("/portal/channels"), "email")
    form["email"] = " Camille@Example.com "
    page = form.submit(status=303).follow()
    assert "Nothing changed: this is already your address." in page.text
    assert consent_status(dbsession, camille, "email") == "granted"
    assert len(ledger(dbsession, camille)) == rows
    assert courier.sent == []


def test_new_email_without_consent_sends_nothing_unless_asked(portal, courier, dbsession, camille):
    log_in(portal, camille, lang="en")
    form = _address_form(portal.get("/portal/channels"), "email")
    form["email"] = "other@example.com"
    page = form.submit(status=303).follow()
    assert "Your address is saved." in page.text
    assert courier.sent == [] and consent_status(dbsession, camille, "email") is None

    form = _address_form(page, "email")
    form["email"] = "third@example.com"
    form["consent"] = True
    page = form.submit(status=303).follow()
    assert courier.last("confirm_email").to == "third@example.com"
    assert "We sent a confirmation email to third@example.com" in page.text
    assert consent_status(dbsession, camille, "email") == "pending"
    started = ledger(dbsession, camille, "consent.email")[-1]
    assert (started.before, started.after) == (None, "pending")
    assert started.details["step"] == "started"


def test_new_phone_of_a_customer_who_agreed_to_sms_gets_a_code(portal, courier, dbsession, camille):
    log_in(portal, camille, lang="en")
    page = portal.get("/portal/channels")
    next(f for f in page.forms.values() if f.action.endswith("/channels/sms/grant")).submit()
    page = portal.get("/portal/channels")
    confirm = next(f for f in page.forms.values() if f.action.endswith("/channels/sms/confirm"))
    confirm["code"] = courier.last("confirm_sms").code
    confirm.submit(status=303)
    assert consent_status(dbsession, camille, "sms") == "granted"

    form = _address_form(portal.get("/portal/channels"), "phone")
    form["phone"] = "06 98 76 54 32"
    page = form.submit(status=303).follow()
    assert courier.last("confirm_sms").to == "+33698765432"
    assert "We sent a code by SMS to +33698765432" in page.text
    assert consent_status(dbsession, camille, "sms") == "pending"


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("email", {"email": ""}),
        ("phone", {"phone": "   "}),
        ("postal", {"line1": "", "line2": "", "postal_code": "", "city": "", "country": "FR"}),
    ],
)
def test_an_empty_address_form_is_an_error_not_a_removal(portal, dbsession, kind, fields):
    customer = make_customer(
        dbsession,
        email="kept@example.com",
        phone="+33612345678",
        postal_line1="3 rue Lepic",
        postal_code="75018",
        city="Paris",
        country="FR",
    )
    log_in(portal, customer, lang="en")
    form = _address_form(portal.get("/portal/channels"), kind)
    for name, value in fields.items():
        form[name] = value
    page = form.submit(status=400)
    assert "Enter an address, or use “Remove”" in page.html.select_one(".errors").text
    kept = fresh(dbsession, customer)
    assert (kept.email, kept.phone, kept.city) == ("kept@example.com", "+33612345678", "Paris")
    assert ledger(dbsession, customer) == []


def _remove_form(page, kind):
    return next(
        f
        for f in page.forms.values()
        if f.action.endswith(f"/address/{kind}") and f.fields.get("action")
    )


def test_removing_an_address_needs_the_box_ticked_and_is_in_the_ledger(portal, dbsession, camille):
    log_in(portal, camille, lang="en")
    form = _remove_form(portal.get("/portal/channels"), "phone")
    page = form.submit(status=400)
    assert "Tick the box to confirm that you want this address removed." in page.text
    assert fresh(dbsession, camille).phone == "+33612345678"
    assert ledger(dbsession, camille) == []

    form = _remove_form(page, "phone")
    form["confirm_remove"] = True
    page = form.submit(status=303).follow()
    assert "The address is removed: we will no longer use it." in page.text
    customer = fresh(dbsession, camille)
    assert customer.phone is None and customer.phone_hmac is None
    assert customer.email == "camille@example.com"
    (entry,) = ledger(dbsession, camille, "address.phone")
    assert entry.before and entry.after is None
    assert (entry.actor_type, entry.ip) == ("customer", BROWSER["REMOTE_ADDR"])
    # Nothing left to remove: no remove form for the phone any more.
    assert not any(
        f.action.endswith("/address/phone") and f.fields.get("action") for f in page.forms.values()
    )


@pytest.mark.parametrize(
    ("kind", "field", "value", "message"),
    [
        ("email", "email", "nope@", "Cette adresse e-mail n"),
        ("phone", "phone", "12", "Ce numéro de téléphone n"),
    ],
)
def test_invalid_address_changes_nothing(portal, dbsession, camille, kind, field, value, message):
    log_in(portal, camille)
    page = portal.get("/portal/channels")
    form = next(f for f in page.forms.values() if f.action.endswith(f"/address/{kind}"))
    form[field] = value
    answer = form.submit(status=400)
    assert message in answer.html.select_one(".errors").text
    assert f"« {value} »" in answer.html.select_one(".errors").text
    assert fresh(dbsession, camille).email == "camille@example.com"
    assert fresh(dbsession, camille).phone == "+33612345678"
    assert ledger(dbsession, camille) == []


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [("email", "email", "camille@@example"), ("phone", "phone", "06 12")],
)
def test_a_refused_address_stays_in_the_form_and_is_named(
    portal, dbsession, camille, kind, field, value
):
    log_in(portal, camille, lang="en")
    form = _address_form(portal.get("/portal/channels"), kind)
    form[field] = value
    if kind == "email":
        form["consent"] = True
    page = form.submit(status=400)
    assert f"“{value}”" in page.html.select_one(".errors").text
    again = _address_form(page, kind)
    assert again[field].value == value
    if kind == "email":
        assert again["consent"].checked
    # The other forms still show what is stored.
    other = "phone" if kind == "email" else "email"
    assert _address_form(page, other)[other].value == getattr(camille, other)
    assert ledger(dbsession, camille) == []


def test_postal_address_requires_city_in_english(portal, dbsession, camille):
    log_in(portal, camille, lang="en")
    page = portal.get("/portal/channels")
    form = next(f for f in page.forms.values() if f.action.endswith("/address/postal"))
    form["line1"] = "3 rue Lepic"
    form["postal_code"] = "75018"
    answer = form.submit(status=400)
    assert "Postal address — This field is required." in answer.text
    form = next(f for f in answer.forms.values() if f.action.endswith("/address/postal"))
    assert (form["line1"].value, form["postal_code"].value) == ("3 rue Lepic", "75018")
    form["city"] = "Paris"
    form.submit(status=303)
    assert fresh(dbsession, camille).city == "Paris"


def test_unknown_channel_is_404(portal, camille):
    log_in(portal, camille)
    token = portal.get("/portal/channels").html.find("input", {"name": "csrf_token"})["value"]
    portal.post("/portal/channels/pigeon/grant", {"csrf_token": token}, status=404)


def test_sms_without_phone_says_add_an_address(portal, dbsession):
    customer = make_customer(dbsession, phone=None)
    log_in(portal, customer, lang="en")
    page = portal.get("/portal/channels")
    answer = next(
        f for f in page.forms.values() if f.action.endswith("/channels/sms/grant")
    ).submit(status=400)
    assert "Add an address for this channel first." in answer.text


# --- topics ------------------------------------------------------------------------------


def test_subscribe_and_unsubscribe_a_topic(portal, dbsession, camille, news, offers):
    log_in(portal, camille)
    page = portal.get("/portal/topics")
    assert only_h1(page) == "Sujets"
    assert "Nos promotions" in page.text
    form = next(
        f for f in page.forms.values() if f.fields.get("topic") and f["topic"].value == "news"
    )
    form.submit("subscribed", value="yes", status=303)
    page = portal.get("/portal/topics")
    form = next(
        f for f in page.forms.values() if f.fields.get("topic") and f["topic"].value == "offers"
    )
    form.submit("subscribed", value="no", status=303)
    assert [(e.field, e.after) for e in ledger(dbsession, camille)] == [
        ("topic.news", "subscribed"),
        ("topic.offers", "unsubscribed"),
    ]


def test_unknown_topic_is_refused(portal, dbsession, camille, news):
    log_in(portal, camille, lang="en")
    token = portal.get("/portal/topics").html.find("input", {"name": "csrf_token"})["value"]
    page = portal.post(
        "/portal/topics", {"csrf_token": token, "topic": "nope", "subscribed": "yes"}, status=400
    )
    assert "This topic does not exist." in page.text
    assert ledger(dbsession, camille) == []


@pytest.mark.parametrize("choice", ["maybe", "", "YES", "1"])
def test_an_unexpected_subscription_choice_changes_nothing(
    portal, dbsession, camille, news, choice
):
    log_in(portal, camille, lang="en")
    form = next(
        f
        for f in portal.get("/portal/topics").forms.values()
        if f.fields.get("topic") and f["topic"].value == "news"
    )
    form.submit("subscribed", value="yes", status=303)
    rows = len(ledger(dbsession, camille))
    token = form["csrf_token"].value
    post = {"csrf_token": token, "topic": "news"}
    if choice:
        post["subscribed"] = choice
    page = portal.post("/portal/topics", post, status=400)
    assert "Use the Subscribe or Unsubscribe button." in page.text
    if choice:
        assert f"“{choice}”" in page.text
    assert len(ledger(dbsession, camille)) == rows
    assert "You receive it." in portal.get("/portal/topics").text


def test_an_unexpected_consent_box_value_changes_nothing(portal, courier, dbsession, camille):
    log_in(portal, camille, lang="en")
    token = portal.get("/portal/channels").html.find("input", {"name": "csrf_token"})["value"]
    portal.post(
        "/portal/address/email",
        {"csrf_token": token, "email": "new@example.com", "consent": "maybe"},
        status=400,
    )
    portal.post(
        "/portal/address/email",
        {"csrf_token": token, "email": "new@example.com", "action": "delete"},
        status=400,
    )
    assert fresh(dbsession, camille).email == "camille@example.com"
    assert ledger(dbsession, camille) == [] and courier.sent == []


# --- frequency, pause, hours, order -------------------------------------------------------


def _form(page, route_end):
    return next(f for f in page.forms.values() if f.action.endswith(route_end))


def test_overall_and_per_topic_frequency(portal, dbsession, camille, offers):
    log_in(portal, camille)
    page = portal.get("/portal/frequency")
    assert only_h1(page) == "Fréquence et pause"
    form = _form(page, "/portal/frequency")
    form["frequency"] = "weekly"
    form["topic.offers"] = "monthly"
    form.submit(status=303)
    fields = {(e.field, e.after) for e in ledger(dbsession, camille)}
    assert {("frequency", "weekly"), ("topic_frequency.offers", "monthly")} <= fields
    assert "Au plus une fois par mois" in portal.get("/portal").text


def test_a_sunset_is_explained_and_the_customer_can_undo_it(portal, dbsession, camille, offers):
    from prefcenter.services import preferences
    from prefcenter.services.ledger import Actor

    preferences.set_frequency(dbsession, camille, "monthly", Actor("system", "sunset"))
    log_in(portal, camille)
    page = portal.get("/portal/frequency")
    notice = page.html.find(id="lowered-by-us")
    assert notice is not None and "au plus un par mois" in notice.text
    assert page.html.find("input", {"id": "frequency-monthly"}).has_attr("checked")

    form = _form(page, "/portal/frequency")
    form["frequency"] = "any"
    form.submit(status=303)

    assert portal.get("/portal/frequency").html.find(id="lowered-by-us") is None
    customer_change = ledger(dbsession, camille)[-1]
    assert (customer_change.field, customer_change.actor_type, customer_change.after) == (
        "frequency",
        "customer",
        "any",
    )


def test_invalid_frequency_changes_nothing(portal, dbsession, camille, offers):
    log_in(portal, camille)
    token = portal.get("/portal/frequency").html.find("input", {"name": "csrf_token"})["value"]
    portal.post(
        "/portal/frequency",
        {"csrf_token": token, "frequency": "weekly", "topic.offers": "hourly"},
        status=400,
    )
    portal.post(
        "/portal/frequency",
        {"csrf_token": token, "frequency": "weekly", "topic.nope": "weekly"},
        status=400,
    )
    assert ledger(dbsession, camille) == []


def test_pause_one_month_then_resume(portal, dbsession, camille):
    log_in(portal, camille)
    form = _form(portal.get("/portal/frequency"), "/portal/pause")
    form["length"] = "1"
    form.submit(status=303)
    until = fresh(dbsession, camille).preference.paused_until
    assert dt.timedelta(days=27) < until - utcnow() < dt.timedelta(days=32)
    page = portal.get("/portal/frequency")
    assert "en pause jusqu\u2019au" in page.text
    _form(page, "/portal/resume").submit(status=303)
    assert fresh(dbsession, camille).preference.paused_until is None
    assert [e.field for e in ledger(dbsession, camille)] == ["paused_until", "paused_until"]


def test_pause_until_a_date_is_shown_in_the_customer_language(portal, dbsession, camille):
    log_in(portal, camille, lang="en")
    form = _form(portal.get("/portal/frequency"), "/portal/pause")
    form["length"] = "date"
    form["until"] = (utcnow() + dt.timedelta(days=40)).date().isoformat()
    form.submit(status=303)
    page = portal.get("/portal")
    expected = (utcnow() + dt.timedelta(days=40)).strftime("%B")
    assert "paused until" in page.text and expected in page.text


def test_pause_in_the_past_is_refused(portal, dbsession, camille):
    log_in(portal, camille)
    form = _form(portal.get("/portal/frequency"), "/portal/pause")
    form["length"] = "date"
    form["until"] = "2020-01-01"
    page = form.submit(status=400)
    assert "déjà passée" in page.text
    form = _form(page, "/portal/pause")
    form["length"] = "date"
    form["until"] = "someday"
    form.submit(status=400)
    assert ledger(dbsession, camille) == []


def test_contact_hours_and_timezone(portal, dbsession, camille):
    log_in(portal, camille)
    form = _form(portal.get("/portal/frequency"), "/portal/hours")
    form["start"] = "10:00"
    form["end"] = "19:30"
    form["timezone"] = "America/Toronto"
    form.submit(status=303)
    customer = fresh(dbsession, camille)
    assert customer.timezone == "America/Toronto"
    assert (customer.preference.contact_start, customer.preference.contact_end) == (600, 1170)
    assert {e.field for e in ledger(dbsession, camille)} == {"timezone", "contact_hours"}


def test_bad_hours_or_timezone_change_nothing(portal, dbsession, camille):
    log_in(portal, camille, lang="en")
    token = portal.get("/portal/frequency").html.find("input", {"name": "csrf_token"})["value"]
    page = portal.post(
        "/portal/hours",
        {"csrf_token": token, "start": "10:00", "end": "10:00", "timezone": "Europe/Paris"},
        status=400,
    )
    assert "The start and end times must differ." in page.text
    page = portal.post(
        "/portal/hours",
        {"csrf_token": token, "start": "10:00", "end": "18:00", "timezone": "Mars/Olympus"},
        status=400,
    )
    assert "not a time zone we know" in page.text
    portal.post(
        "/portal/hours",
        {"csrf_token": token, "start": "25:00", "end": "18:00", "timezone": "Europe/Paris"},
        status=400,
    )
    assert ledger(dbsession, camille) == []


def test_refused_hours_stay_in_the_form_and_are_named(portal, dbsession, camille):
    log_in(portal, camille, lang="en")
    form = _form(portal.get("/portal/frequency"), "/portal/hours")
    form["start"] = "21:00"
    form["end"] = "21:00"
    form["timezone"] = "America/Toronto"
    page = form.submit(status=400)
    assert "Contact hours — “21:00 - 21:00”: The start and end times must differ." in page.text
    again = _form(page, "/portal/hours")
    assert (again["start"].value, again["end"].value) == ("21:00", "21:00")
    assert again["timezone"].value == "America/Toronto"
    token = again["csrf_token"].value
    page = portal.post(
        "/portal/hours",
        {"csrf_token": token, "start": "25:00", "end": "18:00", "timezone": "Europe/Paris"},
        status=400,
    )
    assert "“25:00 - 18:00”" in page.text
    assert _form(page, "/portal/hours")["start"].value == "25:00"
    assert ledger(dbsession, camille) == []


def test_refused_channel_order_stays_in_the_form_and_is_named(portal, dbsession, camille):
    log_in(portal, camille, lang="en")
    form = _form(portal.get("/portal/frequency"), "/portal/order")
    for n, channel in enumerate(("sms", "sms", "post", "phone"), start=1):
        form[f"order{n}"] = channel
    page = form.submit(status=400)
    assert "Channel order — “SMS, SMS, postal mail, phone”" in page.text
    again = _form(page, "/portal/order")
    assert [again[f"order{n}"].value for n in range(1, 5)] == ["sms", "sms", "post", "phone"]


def test_refused_pause_date_stays_in_the_form_and_is_named(portal, dbsession, camille):
    log_in(portal, camille, lang="en")
    form = _form(portal.get("/portal/frequency"), "/portal/pause")
    form["length"] = "date"
    form["until"] = "2020-01-01"
    page = form.submit(status=400)
    assert "Pause — “2020-01-01”: This date or time is already past." in page.text
    again = _form(page, "/portal/pause")
    assert (again["length"].value, again["until"].value) == ("date", "2020-01-01")
    assert ledger(dbsession, camille) == []


def test_refused_frequency_stays_in_the_form(portal, dbsession, camille, offers):
    log_in(portal, camille, lang="en")
    token = portal.get("/portal/frequency").html.find("input", {"name": "csrf_token"})["value"]
    page = portal.post(
        "/portal/frequency",
        {"csrf_token": token, "frequency": "monthly", "topic.offers": "hourly"},
        status=400,
    )
    assert "“hourly”" in page.text
    again = _form(page, "/portal/frequency")
    assert again["frequency"].value == "monthly"
    assert ledger(dbsession, camille) == []


def test_refused_call_back_keeps_the_day_slot_and_phone(portal, dbsession, camille):
    log_in(portal, camille, lang="en")
    form = last_form(portal.get("/portal/callback"))
    form["day"] = form["day"].options[-1][0]
    form["slot"] = "900"
    form["phone"] = "0612"
    form["note"] = "About my card"
    page = form.submit(status=400)
    assert "“0612”" in page.text
    again = last_form(page)
    assert (again["day"].value, again["slot"].value) == (form["day"].value, "900")
    assert (again["phone"].value, again["note"].value) == ("0612", "About my card")


@pytest.mark.parametrize("zone", ["Factory", "localtime", "Etc/GMT+3", "US/Eastern", "GB", ""])
def test_only_real_places_time_zones_are_offered_and_accepted(portal, dbsession, camille, zone):
    log_in(portal, camille, lang="en")
    page = portal.get("/portal/frequency")
    offered = [
        value for value, _selected, _text in _form(page, "/portal/hours")["timezone"].options
    ]
    assert "Europe/Paris" in offered and "Indian/Reunion" in offered
    assert not {"Factory", "localtime", "Etc/GMT+3", "US/Eastern", "GB", "EST5EDT"} & set(offered)
    token = page.html.find("input", {"name": "csrf_token"})["value"]
    answer = portal.post(
        "/portal/hours",
        {"csrf_token": token, "start": "09:00", "end": "18:00", "timezone": zone},
        status=400,
    )
    assert "This is not a time zone we know" in answer.text
    assert fresh(dbsession, camille).timezone == "Europe/Paris"
    assert ledger(dbsession, camille) == []


def test_a_legacy_time_zone_already_stored_can_be_kept(portal, dbsession):
    customer = make_customer(dbsession, timezone="America/Montreal")
    log_in(portal, customer, lang="en")
    form = _form(portal.get("/portal/frequency"), "/portal/hours")
    assert form["timezone"].value == "America/Montreal"
    form["start"] = "08:00"
    form.submit(status=303)
    assert fresh(dbsession, customer).timezone == "America/Montreal"
    assert [e.field for e in ledger(dbsession, customer)] == ["contact_hours"]


def test_unknown_frequency_or_channel_changes_nothing(portal, dbsession, camille):
    log_in(portal, camille, lang="en")
    token = portal.get("/portal/frequency").html.find("input", {"name": "csrf_token"})["value"]
    page = portal.post(
        "/portal/frequency", {"csrf_token": token, "frequency": "hourly"}, status=400
    )
    assert "Frequency — “hourly”: Choose one of the frequencies offered." in page.text
    page = portal.post(
        "/portal/order",
        {"csrf_token": token, "order1": "pigeon", "order2": "email", "order3": "sms"},
        status=400,
    )
    assert "“pigeon, email, SMS, ”" not in page.text and "pigeon" in page.text
    assert ledger(dbsession, camille) == []


def test_channel_order(portal, dbsession, camille):
    log_in(portal, camille)
    form = _form(portal.get("/portal/frequency"), "/portal/order")
    for n, channel in enumerate(("sms", "email", "post", "phone"), start=1):
        form[f"order{n}"] = channel
    form.submit(status=303)
    assert fresh(dbsession, camille).preference.channel_order == "sms,email,post,phone"


def test_channel_order_with_a_channel_twice_is_refused(portal, dbsession, camille):
    log_in(portal, camille)
    form = _form(portal.get("/portal/frequency"), "/portal/order")
    for n, channel in enumerate(("sms", "sms", "post", "phone"), start=1):
        form[f"order{n}"] = channel
    page = form.submit(status=400)
    assert "qu\u2019une fois" in page.text
    assert ledger(dbsession, camille) == []


# --- call back ---------------------------------------------------------------------------


def test_call_back_request_is_stored_as_call_list_entry_and_interaction(portal, dbsession, camille):
    log_in(portal, camille)
    page = portal.get("/portal/callback")
    assert only_h1(page) == "Demander à être rappelé"
    form = last_form(page)
    day_value = form["day"].options[-1][0]
    form["day"] = day_value
    form["slot"] = "600"
    form["note"] = "Question sur ma carte"
    sent = form.submit(status=303)
    done = sent.follow(status=200)
    assert "Merci. Nous vous appellerons au +33612345678" in done.text
    # Sent twice (a double click, the browser's "send again"): still one call to make.
    form.submit(status=303).follow(status=200)
    callback = dbsession.scalars(
        sa.select(CallbackRequest).where(CallbackRequest.customer_id == camille.id)
    ).one()
    assert sent.location == done.request.url and str(callback.id) in sent.location
    assert (callback.day.isoformat(), callback.slot_start, callback.slot_end) == (
        day_value,
        600,
        660,
    )
    assert dt.date.fromisoformat(day_value).weekday() < 5
    kinds = dbsession.scalars(
        sa.select(Interaction.kind).where(Interaction.customer_id == camille.id)
    ).all()
    assert sorted(kinds) == ["callback_request", "portal_visit"]
    # The confirmation shows only the customer's own open request.
    other = portal.get(f"/portal/callback?requested={uuid.uuid4()}")
    assert "Merci. Nous vous appellerons" not in other.text


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("day", "2020-01-06", "jour ouvré"),
        ("slot", "1200", "créneaux proposés"),
        ("phone", "123", "numéro de téléphone n"),
    ],
)
def test_call_back_errors(portal, dbsession, camille, field, value, message):
    log_in(portal, camille)
    form = last_form(portal.get("/portal/callback"))
    values = {
        "csrf_token": form["csrf_token"].value,
        "day": form["day"].options[-1][0],
        "slot": "600",
        "phone": "+33612345678",
    }
    values[field] = value
    page = portal.post("/portal/callback", values, status=400)
    assert message in page.text
    assert dbsession.scalars(sa.select(CallbackRequest)).all() == []


# --- my data -----------------------------------------------------------------------------


def test_download_my_data(portal, dbsession, camille, offers):
    log_in(portal, camille)
    page = portal.get("/portal/data")
    assert only_h1(page) == "Mes données"
    download = portal.get("/portal/data/export.json")
    assert download.content_type == "application/json"
    assert "attachment" in download.headers["Content-Disposition"]
    document = json.loads(download.text)
    assert document["profile"]["email"] == "camille@example.com"
    assert set(document) >= {"preferences", "consents", "ledger", "interactions", "messages"}


def test_erase_needs_the_confirmation_box(portal, dbsession, camille):
    log_in(portal, camille)
    form = last_form(portal.get("/portal/data/erase"))
    page = form.submit(status=400)
    assert "Cochez la case" in page.text
    assert fresh(dbsession, camille).erased_at is None


def test_erase_my_account(portal, dbsession, camille):
    log_in(portal, camille, lang="en")
    form = last_form(portal.get("/portal/data/erase"))
    form["confirm"] = True
    page = form.submit(status=200)
    assert "Your account is erased." in page.text
    customer = fresh(dbsession, camille)
    assert customer.erased_at is not None and customer.email is None
    assert all(e.ip is None for e in ledger(dbsession, camille))
    portal.get("/portal", status=303)


def test_language_switch_from_a_form_answer_goes_to_its_page(portal, dbsession, camille):
    log_in(portal, camille)
    page = portal.get("/portal/channels")
    form = next(f for f in page.forms.values() if f.action.endswith("/address/email"))
    form["email"] = "nope@"
    answer = form.submit(status=400)
    english = answer.html.find("a", hreflang="en")["href"]
    assert english == "http://localhost/portal/channels?lang=en"
    assert only_h1(portal.get(english)) == "Channels"
    assert page.html.find("a", hreflang="en")["href"] == "http://localhost/portal/channels?lang=en"


def test_portal_pages_send_security_headers(portal, camille):
    log_in(portal, camille)
    headers = portal.get("/portal").headers
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "Content-Security-Policy" not in portal.get("/healthz").headers


def test_development_courier_logs_the_link_production_does_not(caplog):
    import logging
    import uuid

    from prefcenter.portal.courier import LogCourier, PortalMessage

    message = PortalMessage(
        kind="magic_link",
        customer_id=uuid.uuid4(),
        channel="email",
        to="marie@example.com",
        locale="fr",
        link="http://localhost/p/TOKEN",
    )
    with caplog.at_level(logging.INFO, logger="prefcenter.portal.courier"):
        LogCourier(production=False).send(message)
        LogCourier(production=True).send(message)
    development, production = caplog.records
    assert "http://localhost/p/TOKEN" in development.getMessage()
    assert "marie@example.com" not in development.getMessage()
    assert "TOKEN" not in production.getMessage()


def test_email_confirmation_with_an_expired_link(portal, dbsession, camille):
    from prefcenter import tokens
    from prefcenter.services.preferences import DOUBLE_OPT_IN_PURPOSE
    from tests.conftest import TEST_SECRET

    old = utcnow() - dt.timedelta(days=3)
    token = tokens.sign(
        TEST_SECRET,
        DOUBLE_OPT_IN_PURPOSE,
        {"customer": str(camille.id), "channel": "email", "nonce": "n"},
        old + dt.timedelta(hours=48),
    )
    page = portal.get(f"/portal/confirm/{token}", status=403)
    assert "Ce lien a expiré" in page.text
    portal.post(f"/portal/confirm/{token}", {"csrf_token": "x"}, status=400)  # CSRF first
    assert ledger(dbsession, camille) == []
