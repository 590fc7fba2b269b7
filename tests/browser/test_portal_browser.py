"""The portal in a real browser: Debian's headless Chromium at a phone's width (375 px).

Opens a signed link, switches to English, grants SMS with the code, unsubscribes from one
topic, pauses for a month, then checks "what you will receive" and the consent ledger; on
every page, nothing may need horizontal scrolling.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import transaction
from webtest.http import StopableWSGIServer

from prefcenter import make_wsgi_app
from prefcenter.consent_settings import ConsentSettings
from prefcenter.db import task_session
from prefcenter.migrate import upgrade
from prefcenter.models import ConsentLedgerEntry, Customer, Topic, TopicSubscription, utcnow
from prefcenter.portal.links import portal_token, unsubscribe_token
from prefcenter.services.suppressions import current_address_hmac
from tests.conftest import TEST_SECRET, app_settings, need_service
from tests.functional.portal.conftest import RecordingCourier

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WIDTH = 375


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The app on a migrated SQLite file, served by waitress on 127.0.0.1."""
    url = f"sqlite:///{tmp_path / 'browser.sqlite'}"
    upgrade(url)
    app = make_wsgi_app(app_settings(**{"sqlalchemy.url": url}))
    courier = RecordingCourier()
    app.registry["portal.courier"] = courier
    factory = app.registry["dbsession_factory"]
    with task_session(factory) as session:
        customer = Customer(
            email="camille@example.com", phone="+33612345678", first_name="Camille", locale="fr"
        )
        # As the preference services would have stored them (the policy matches on these).
        cfg = ConsentSettings.from_settings(app.registry.settings)
        customer.email_hmac = current_address_hmac(customer, "email", cfg)
        customer.phone_hmac = current_address_hmac(customer, "phone", cfg)
        session.add(customer)
        topics = [
            Topic(
                key="offers",
                names={"fr": "Bons plans", "en": "Deals"},
                kind="marketing",
                regime="opt_in",
            ),
            Topic(
                key="news",
                names={"fr": "Actualités", "en": "News"},
                kind="marketing",
                regime="opt_in",
            ),
            Topic(
                key="points",
                names={"fr": "Vos points", "en": "Your points"},
                kind="alert",
                regime="opt_in",
            ),
        ]
        session.add_all(topics)
        session.flush()
        for topic in topics:
            session.add(
                TopicSubscription(customer_id=customer.id, topic_id=topic.id, status="subscribed")
            )
        customer_id = customer.id
    server = StopableWSGIServer.create(app, host="127.0.0.1", port=0)
    try:
        yield {
            "base": f"http://127.0.0.1:{server.effective_port}",
            "customer_id": customer_id,
            "courier": courier,
            "factory": factory,
        }
    finally:
        server.shutdown()
        app.registry["dbbind"].dispose()
        app.registry["read_session_factory"].kw["bind"].dispose()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        need_service(
            "Chromium", f"{CHROMIUM} and {CHROMEDRIVER} (Debian chromium, chromium-driver)"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        need_service("selenium", "the selenium package is not installed (pip install -e .[dev])")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        f"--window-size={WIDTH},900",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": 812, "deviceScaleFactor": 1, "mobile": True},
    )
    try:
        yield driver
    finally:
        driver.quit()


def fits(driver: Any, shots: Path | None = None, name: str = "") -> None:
    width = driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= WIDTH, f"{driver.current_url} is {width}px wide"
    assert len(driver.find_elements("css selector", "h1")) == 1
    if shots is not None and name:
        driver.save_screenshot(str(shots / f"{name}.png"))


def submit(driver: Any, action_end: str) -> None:
    """Press the submit button of the form whose action ends with ``action_end``, and wait
    for the next page."""

    form = next(
        f
        for f in driver.find_elements("css selector", "form")
        if f.get_attribute("action").endswith(action_end)
    )
    button = form.find_element("css selector", "button[type=submit]")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    click(driver, button)


def click(driver: Any, element: Any) -> None:
    """Click something that loads a new page, and wait until the old one is gone."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.wait import WebDriverWait

    html = driver.find_element("css selector", "html")
    element.click()

    def old_page_gone(_driver: Any) -> bool:
        try:
            html.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            # Chromium's answer when asked mid-navigation about a node of the page it is
            # leaving: stale too, said otherwise.
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    WebDriverWait(driver, 10).until(old_page_gone)


def go(driver: Any, link_text: str) -> None:
    click(driver, driver.find_element("link text", link_text))


def flash(driver: Any) -> str:
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    located = WebDriverWait(driver, 10).until(
        expected_conditions.presence_of_element_located(("css selector", ".flash"))
    )
    return str(located.text)


def test_a_customer_sets_preferences_on_a_phone(site: dict[str, Any], browser: Any) -> None:
    base, customer_id, courier = site["base"], site["customer_id"], site["courier"]
    # Screenshots only when asked for (PREFCENTER_SCREENSHOTS=/some/dir).
    where = os.environ.get("PREFCENTER_SCREENSHOTS")
    shots = Path(where) if where else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)

    token = portal_token(TEST_SECRET, customer_id, hours=72, now=utcnow())
    browser.get(f"{base}/p/{token}")
    assert browser.current_url == f"{base}/portal"
    assert browser.find_element("css selector", "h1").text == "Ce que vous recevrez"
    fits(browser, shots, "home-fr")

    go(browser, "English")
    assert browser.find_element("css selector", "h1").text == "What you will receive"
    assert browser.find_element("css selector", "html").get_attribute("lang") == "en"

    # Grant SMS: the code goes out through the courier, the customer types it.
    go(browser, "Channels")
    fits(browser, shots, "channels-before")
    submit(browser, "/portal/channels/sms/grant")
    assert "We sent you a code by SMS" in flash(browser)
    code = courier.last("confirm_sms").code
    field = browser.find_element("id", "code-sms")
    field.send_keys(code)
    submit(browser, "/portal/channels/sms/confirm")
    sms = browser.find_element("id", "channel-sms")
    assert "Status: you agreed." in sms.text
    fits(browser, shots, "channels")

    # Unsubscribe from one topic.
    go(browser, "Topics")
    fits(browser, shots, "topics")
    news = browser.find_element("xpath", "//button[contains(., 'Unsubscribe from News')]")
    click(browser, news)
    assert "You are unsubscribed." in flash(browser)

    # Pause for a month.
    go(browser, "Frequency and pause")
    fits(browser, shots, "frequency")
    browser.find_element("id", "length-1").click()
    submit(browser, "/portal/pause")
    assert "Marketing messages are paused." in flash(browser)

    # What you will receive now.
    go(browser, "What you will receive")
    fits(browser, shots, "home-en")
    cards = {
        card.find_element("css selector", "h2").text: card
        for card in browser.find_elements("css selector", "li.card")
    }
    assert set(cards) == {"Deals", "News", "Your points"}
    points = cards["Your points"].text
    assert "SMS" in points and (
        "You would receive it now by SMS." in points or "by SMS on" in points
    )
    browser.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
    assert "You paused marketing messages until" in cards["Deals"].text
    assert "You unsubscribed from “News”." in cards["News"].text
    assert (
        "Marketing messages are paused until" in browser.find_element("css selector", "main").text
    )

    # Every other page fits the phone too.
    for link, name in (("Call back", "callback"), ("My data", "data")):
        go(browser, link)
        fits(browser, shots, name)
    browser.get(f"{base}/portal/data/erase")
    fits(browser, shots, "erase")
    browser.get(f"{base}/p/not-a-valid-token")
    fits(browser, shots, "bad-link")
    browser.get(f"{base}/portal/no-such-page")
    assert browser.find_element("css selector", "h1").text == "Page not found"
    fits(browser, shots, "not-found")
    browser.get(f"{base}/portal/logout")  # a page with a button: a GET logs nobody out
    fits(browser, shots, "logout")
    unsubscribe = unsubscribe_token(TEST_SECRET, customer_id, "offers", days=90, now=utcnow())
    browser.get(f"{base}/u/{unsubscribe}")
    fits(browser, shots, "unsubscribe")
    click(browser, browser.find_element("css selector", "button.link"))  # log out
    fits(browser, shots, "login")

    # The ledger holds each change, with the browser's IP address and user agent.
    with task_session(site["factory"]) as session:
        rows = session.scalars(
            sa.select(ConsentLedgerEntry)
            .where(ConsentLedgerEntry.customer_id == customer_id)
            .order_by(ConsentLedgerEntry.id)
        ).all()
        changes = [(r.field, r.after) for r in rows]
        assert ("consent.sms", "pending") in changes
        assert ("consent.sms", "granted") in changes
        assert ("topic.news", "unsubscribed") in changes
        paused = next(r for r in rows if r.field == "paused_until")
        until = dt.datetime.fromisoformat(paused.after)
        assert dt.timedelta(days=27) < until - utcnow() < dt.timedelta(days=32)
        assert all(r.ip == "127.0.0.1" for r in rows)
        assert all("Chrome" in (r.user_agent or "") for r in rows)
        transaction.get()  # the session's own manager commits; nothing to change here


def test_chromium_is_debian_s(browser: Any) -> None:
    assert shutil.which("chromium") in (CHROMIUM, None) or os.path.exists(CHROMIUM)
    assert browser.capabilities["browserName"] in ("chrome", "chrome-headless-shell", "chromium")
