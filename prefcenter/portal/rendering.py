"""Language, translation and formatting helpers for the portal's templates."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime
from pyramid.csrf import get_csrf_token
from pyramid.i18n import TranslationString

from ..explanations import CHANNEL_NAMES
from ..i18n import DOMAIN, LOCALES, negotiate

# Set by views reached through a signed link (no session): the customer's own locale.
LOCALE_HINT = "prefcenter.locale_hint"
TEMPLATE_PREFIX = "prefcenter.portal:"
# Routes that only take a form's POST, and the page that shows that form.
PAGE_OF_FORM = {
    "portal_address": "portal_channels",
    "portal_consent": "portal_channels",
    "portal_pause": "portal_frequency",
    "portal_resume": "portal_frequency",
    "portal_hours": "portal_frequency",
    "portal_order": "portal_frequency",
    "portal_logout": "portal_login",
    "unsubscribe_all": "unsubscribe",
}


def negotiate_locale(request: Any) -> str:
    """``?lang=`` (remembered in the session), then the session, the customer's locale,
    then Accept-Language; French when nothing matches."""
    asked = request.GET.get("lang")
    if asked in LOCALES:
        if request.session.get("lang") != asked:
            request.session["lang"] = asked
        return str(asked)
    chosen = request.session.get("lang")
    if chosen in LOCALES:
        return str(chosen)
    hint = request.environ.get(LOCALE_HINT)
    if hint:
        return negotiate(hint)
    from .auth import current_customer

    customer = current_customer(request)
    if customer is not None and customer.locale:
        return negotiate(customer.locale)
    return str(request.accept_language.lookup(list(LOCALES), default=negotiate(None)))


def translator(request: Any) -> Any:
    def _(message: str, **mapping: Any) -> str:
        return str(
            request.localizer.translate(
                TranslationString(message, domain=DOMAIN, mapping=mapping or None)
            )
        )

    return _


def zone_of(request: Any) -> ZoneInfo:
    from .auth import current_customer

    customer = current_customer(request)
    name = customer.timezone if customer is not None else None
    try:
        return ZoneInfo(name or "Europe/Paris")
    except (KeyError, ValueError):
        return ZoneInfo("Europe/Paris")


def when(request: Any, moment: dt.datetime | None) -> str:
    """A date and time in the customer's timezone, worded for the page's language."""
    if moment is None:
        return ""
    return format_datetime(
        moment, "d MMMM y, HH:mm", tzinfo=zone_of(request), locale=request.localizer.locale_name
    )


def day(request: Any, value: dt.date) -> str:
    return format_date(value, "EEEE d MMMM y", locale=request.localizer.locale_name)


def add_template_helpers(event: Any) -> None:
    if not str(event.get("renderer_name", "")).startswith(TEMPLATE_PREFIX):
        return
    request = event["request"]
    if request is None:
        return
    event["_"] = translator(request)
    event["lang"] = request.localizer.locale_name
    event["lang_url"] = lambda lang: switch_language_url(request, lang)
    event["when"] = lambda moment: when(request, moment)
    event["day"] = lambda value: day(request, value)
    event["csrf_token"] = get_csrf_token(request)
    event["channel_name"] = lambda channel: event["_"](CHANNEL_NAMES[channel])
    from .auth import current_customer

    event["customer"] = current_customer(request)


def switch_language_url(request: Any, lang: str) -> str:
    """This page in another language; a page answering a POST switches on its GET page."""
    route = request.matched_route.name if request.matched_route else None
    if request.method == "GET" or route not in PAGE_OF_FORM:
        return f"{request.path_url}?lang={lang}"
    page = PAGE_OF_FORM[route]
    return str(request.route_url(page, **request.matchdict, _query={"lang": lang}))


PORTAL_ROUTES = ("portal_", "unsubscribe")
SECURITY_HEADERS = {
    # Pages reached by a signed link must not leak it to another site through Referer.
    "Referrer-Policy": "no-referrer",
    # No script, no framing (the one-click forms must not be clickjacked).
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}


def security_headers(event: Any) -> None:
    route = event.request.matched_route
    if route is None or not route.name.startswith(PORTAL_ROUTES):
        return
    for name, value in SECURITY_HEADERS.items():
        event.response.headers.setdefault(name, value)
