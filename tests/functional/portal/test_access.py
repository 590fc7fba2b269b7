"""Getting into the portal without a password: signed links, magic links, log out, CSRF."""

from __future__ import annotations

import datetime as dt

import webtest

from prefcenter import make_wsgi_app
from prefcenter.db import DBBIND_KEY
from prefcenter.models import utcnow
from prefcenter.portal.links import portal_token
from tests.conftest import app_settings
from tests.factories import make_customer
from tests.functional.portal.conftest import (
    confirmed_customer,
    csrf_token,
    link_path,
    log_in,
)


def test_a_signed_link_opens_a_session_and_lands_on_the_portal(portal, dbsession):
    customer = make_customer(dbsession)
    response = portal.get(link_path(customer.id), status=303)
    assert response.location == "http://localhost/portal"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "secure" not in cookie.lower()
    assert response.headers["Referrer-Policy"] == "no-referrer"
    home = portal.get("/portal")
    assert home.html.find_all("h1")[0].text == "Ce que vous recevrez"


def test_the_session_cookie_is_secure_in_production(connection, broker, dbsession):
    settings = app_settings(
        **{DBBIND_KEY: connection, "prefcenter.broker": broker, "prefcenter.env": "production"}
    )
    app = webtest.TestApp(make_wsgi_app(settings))
    customer = make_customer(dbsession)
    response = app.get(link_path(customer.id), status=303)
    assert "secure" in response.headers["Set-Cookie"].lower()


def test_a_tampered_link_gets_a_clear_page_and_no_session(portal, dbsession):
    customer = make_customer(dbsession)
    path = link_path(customer.id)
    tampered = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    page = portal.get(tampered, status=400)
    assert "Il a peut-être été copié" in page.text
    assert "Set-Cookie" not in page.headers or "customer" not in page.headers["Set-Cookie"]
    portal.get("/portal", status=303)


def test_an_expired_link_says_so_with_403(portal, dbsession):
    customer = make_customer(dbsession)
    old = utcnow() - dt.timedelta(hours=100)
    page = portal.get(link_path(customer.id, hours=72, now=old), status=403)
    assert "Ce lien a expiré" in page.text
    portal.get("/portal", status=303)


def test_a_link_minted_for_another_purpose_is_refused(portal, dbsession):
    from prefcenter import tokens
    from tests.conftest import TEST_SECRET

    customer = make_customer(dbsession)
    token = tokens.sign(
        TEST_SECRET, "unsubscribe", {"c": str(customer.id)}, utcnow() + dt.timedelta(hours=1)
    )
    portal.get(f"/p/{token}", status=400)


def test_a_link_for_an_erased_customer_is_refused(portal, dbsession):
    customer = make_customer(dbsession, erased_at=utcnow())
    portal.get(link_path(customer.id), status=400)


def test_pages_need_a_session(portal):
    for path in ("/portal", "/portal/channels", "/portal/topics", "/portal/frequency"):
        assert portal.get(path, status=303).location == "http://localhost/portal/login"


def test_link_lifetime_comes_from_the_settings(connection, broker, dbsession):
    settings = app_settings(
        **{DBBIND_KEY: connection, "prefcenter.broker": broker, "prefcenter.portal.link_hours": "1"}
    )
    app = make_wsgi_app(settings)
    assert app.registry["portal.settings"].link_hours == 1


def test_magic_link_is_sent_to_a_known_address(app, portal, courier, dbsession):
    customer = confirmed_customer(app, dbsession, email="lea@example.com")
    page = portal.get("/portal/login")
    form = page.forms[0]
    form["email"] = " Lea@Example.com "
    answer = form.submit(status=200)
    assert "Si cette adresse nous est connue" in answer.text
    message = courier.last("magic_link")
    assert message.customer_id == customer.id
    assert "lea@example.com" not in message.link and "@" not in message.link
    portal.reset()
    assert portal.get(message.link.replace("http://localhost", ""), status=303)
    assert portal.get("/portal").status_int == 200


def test_magic_link_answer_is_the_same_for_an_unknown_address(app, portal, courier, dbsession):
    confirmed_customer(app, dbsession, email="known@example.com")
    token = csrf_token(portal)
    known = portal.post("/portal/login", {"email": "known@example.com", "csrf_token": token})
    unknown = portal.post("/portal/login", {"email": "nobody@example.com", "csrf_token": token})
    assert known.status_int == unknown.status_int == 200
    assert known.html.find("main").text == unknown.html.find("main").text
    assert [m.to for m in courier.sent] == ["known@example.com"]


def test_magic_link_goes_only_to_a_confirmed_address(app, portal, courier, dbsession):
    """Anyone can type any address into their profile: that is no proof it is theirs."""
    owner = confirmed_customer(app, dbsession, email="owner@example.com")
    unconfirmed = make_customer(dbsession, email="typed@example.com")
    intruder = make_customer(dbsession, email="intruder@example.com")
    # The intruder puts the owner's address in their own profile, through the portal.
    log_in(portal, intruder)
    page = portal.get("/portal/channels")
    form = next(f for f in page.forms.values() if f.action.endswith("/address/email"))
    form["email"] = "Owner@example.com"
    form.submit(status=303)
    portal.reset()

    token = csrf_token(portal)
    answers = [
        portal.post("/portal/login", {"email": address, "csrf_token": token})
        for address in ("owner@example.com", "typed@example.com", "nobody@example.com")
    ]
    assert {a.status_int for a in answers} == {200}
    assert len({a.html.find("main").text for a in answers}) == 1
    links = [m for m in courier.sent if m.kind == "magic_link"]
    assert [(m.customer_id, m.to) for m in links] == [(owner.id, "owner@example.com")]
    assert unconfirmed.id not in {m.customer_id for m in courier.sent}


def test_magic_link_is_sent_after_a_refusal_of_a_confirmed_address(app, portal, courier, dbsession):
    """Refusing marketing email does not undo the proof that the address is yours."""
    customer = confirmed_customer(app, dbsession, email="quiet@example.com")
    from prefcenter.services import preferences
    from prefcenter.services.ledger import Actor

    preferences.refuse(dbsession, customer, "email", Actor.customer(customer.id))
    portal.post("/portal/login", {"email": "quiet@example.com", "csrf_token": csrf_token(portal)})
    assert courier.last("magic_link").customer_id == customer.id


def test_magic_link_refuses_an_invalid_email(portal, courier):
    token = csrf_token(portal)
    page = portal.post("/portal/login", {"email": "not-an-email", "csrf_token": token}, status=400)
    assert "Cette adresse e-mail" in page.text
    assert courier.sent == []


def test_magic_link_is_rate_limited_per_address(app, portal, courier, dbsession):
    confirmed_customer(app, dbsession, email="many@example.com")
    token = csrf_token(portal)
    for _ in range(3):
        portal.post("/portal/login", {"email": "many@example.com", "csrf_token": token})
    page = portal.post(
        "/portal/login", {"email": "many@example.com", "csrf_token": token}, status=429
    )
    assert "Trop de demandes" in page.text
    assert len(courier.sent) == 3


def test_magic_link_is_rate_limited_per_ip(portal, courier):
    token = csrf_token(portal)
    for n in range(20):
        portal.post("/portal/login", {"email": f"p{n}@example.com", "csrf_token": token})
    portal.post("/portal/login", {"email": "p99@example.com", "csrf_token": token}, status=429)
    # Another address from another IP still gets through.
    portal.post(
        "/portal/login",
        {"email": "p99@example.com", "csrf_token": token},
        extra_environ={"REMOTE_ADDR": "198.51.100.1"},
        status=200,
    )


def test_a_form_without_csrf_token_is_refused(portal, courier, dbsession):
    make_customer(dbsession, email="csrf@example.com")
    portal.get("/portal/login")
    portal.post("/portal/login", {"email": "csrf@example.com"}, status=400)
    assert courier.sent == []


def test_log_out_ends_the_session(portal, dbsession):
    customer = make_customer(dbsession)
    log_in(portal, customer)
    home = portal.get("/portal")
    logout = home.forms[0]  # the log-out form of the menu
    assert logout.action.endswith("/portal/logout")
    assert logout.submit(status=303).location == "http://localhost/portal/login"
    portal.get("/portal", status=303)


def test_log_out_needs_csrf(portal, dbsession):
    customer = make_customer(dbsession)
    log_in(portal, customer)
    portal.post("/portal/logout", status=400)
    portal.get("/portal", status=200)


def test_link_tokens_never_contain_an_address(dbsession):
    customer = make_customer(dbsession, email="secret@example.com")
    import base64

    token = portal_token("s" * 40, customer.id, hours=1, now=utcnow())
    body = base64.urlsafe_b64decode(token.split(".")[0] + "==").decode()
    assert "secret" not in body and "@" not in body


def test_a_portal_visit_is_an_inbound_interaction_once_a_day(portal, dbsession):
    import sqlalchemy as sa

    from prefcenter.models import Customer, Interaction

    customer = make_customer(dbsession)
    portal.get(link_path(customer.id), status=303)
    portal.get(link_path(customer.id), status=303)
    dbsession.expire_all()
    kinds = dbsession.scalars(
        sa.select(Interaction.kind).where(Interaction.customer_id == customer.id)
    ).all()
    assert kinds == ["portal_visit"]
    assert dbsession.get(Customer, customer.id).last_interaction_at is not None


# --- the portal's own error pages -------------------------------------------------------


def test_an_expired_form_gets_a_portal_page_in_the_customer_language(portal, dbsession):
    customer = make_customer(dbsession, locale="en")
    log_in(portal, customer)
    page = portal.post("/portal/topics", {"topic": "news", "subscribed": "no"}, status=400)
    assert page.html.find("h1").text == "This form has expired"
    assert page.html.html["lang"] == "en"
    assert "Nothing was changed." in page.text
    back = page.html.find("a", string="Go back to the page and try again")
    assert back["href"] == "http://localhost/portal/topics"
    assert page.html.select_one("nav.menu")  # the portal's layout, logged in
    assert page.headers["Referrer-Policy"] == "no-referrer"


def test_an_expired_form_in_french_links_back_to_the_page_that_shows_it(portal, dbsession):
    customer = make_customer(dbsession, email="kept@example.com")
    log_in(portal, customer)
    page = portal.post("/portal/address/email", {"email": "new@example.com"}, status=400)
    assert page.html.find("h1").text == "Ce formulaire a expiré"
    assert page.html.html["lang"] == "fr"
    assert page.html.find("a", class_="button")["href"] == "http://localhost/portal/channels"
    dbsession.expire_all()
    assert dbsession.get(type(customer), customer.id).email == "kept@example.com"


def test_a_stale_login_form_gets_the_portal_page(portal):
    page = portal.post(
        "/portal/login",
        {"email": "a@example.com", "csrf_token": "stale"},
        headers={"Accept-Language": "en"},
        status=400,
    )
    assert page.html.find("h1").text == "This form has expired"
    assert page.html.find("a", class_="button")["href"] == "http://localhost/portal/login"


def test_a_missing_portal_page_is_a_portal_404_in_the_right_language(portal, dbsession):
    page = portal.get("/portal/nope", headers={"Accept-Language": "en"}, status=404)
    assert page.html.find("h1").text == "Page not found"
    assert page.html.find("a", class_="button")["href"] == "http://localhost/portal"
    page = portal.get("/portal/nope", status=404)
    assert page.html.find("h1").text == "Page introuvable"
    customer = make_customer(dbsession)
    log_in(portal, customer)
    token = csrf_token(portal, "/portal/channels")
    page = portal.post("/portal/channels/pigeon/grant", {"csrf_token": token}, status=404)
    assert page.html.find("h1").text == "Page introuvable"
    assert page.html.select_one("nav.menu")


def test_the_api_keeps_its_own_error_answers(portal):
    answer = portal.get("/api/v1/nope", status=404)
    assert "json" in answer.content_type
    assert "<html" not in answer.text


def test_get_log_out_shows_a_button_that_posts(portal, dbsession):
    portal.get("/portal/logout", status=303)  # not logged in: nothing to log out of
    customer = make_customer(dbsession)
    log_in(portal, customer)
    page = portal.get("/portal/logout", status=200)
    assert page.html.find("h1").text == "Se déconnecter"
    portal.get("/portal", status=200)  # a GET logs nobody out
    # The menu's log-out form, then the page's own.
    forms = [f for k, f in page.forms.items() if isinstance(k, int)]
    assert [f.action for f in forms] == ["http://localhost/portal/logout"] * 2
    form = forms[-1]
    assert form.method.lower() == "post" and form["csrf_token"].value
    assert form.submit(status=303).location == "http://localhost/portal/login"
    portal.get("/portal", status=303)
