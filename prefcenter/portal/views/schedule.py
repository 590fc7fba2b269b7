"""How often and when: frequency (overall and per topic), pause, contact hours, time zone,
channel order."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pyramid.view import view_config

from ...errors import InvalidInput
from ...i18n import _
from ...models import Customer, Topic
from ...models.vocabulary import CHANNELS, FREQUENCIES
from ...services import preferences
from ..auth import actor_for, require_customer
from ..forms import PAUSE_MONTHS, minute_of, pause_until
from ..rendering import zone_of
from ..summary import active_topics, receives_topic, topic_frequency
from .common import back_to, portal_settings, rejected, submitted, utcnow

TEMPLATES = "prefcenter.portal:templates/"
PAGE = TEMPLATES + "frequency.html"
TOPIC_FIELD = "topic."


def _page(
    request: Any, customer: Customer, errors: list[str], typed: dict[str, str] | None = None
) -> dict[str, Any]:
    """The page; after an error ``typed`` (the submitted fields) refills the form."""
    typed = typed or {}
    settings = portal_settings(request).consent
    locale = request.localizer.locale_name
    preference = customer.preference
    start = (
        preference.contact_start
        if preference and preference.contact_start is not None
        else settings.default_contact_hours[0]
    )
    end = (
        preference.contact_end
        if preference and preference.contact_end is not None
        else settings.default_contact_hours[1]
    )
    order = list(preference.channels) if preference and preference.channels else []
    order += [c for c in settings.default_channel_order if c not in order]
    order_fields = [f"order{n}" for n in range(1, len(CHANNELS) + 1)]
    if any(name in typed for name in order_fields):
        order = [typed.get(name, "") for name in order_fields]
    return {
        "errors": errors,
        "frequencies": FREQUENCIES,
        "frequency": typed.get("frequency", preference.frequency if preference else "any"),
        "topics": [
            {
                "key": t.key,
                "name": t.name(locale),
                "frequency": typed.get(TOPIC_FIELD + t.key, topic_frequency(customer, t) or ""),
            }
            for t in active_topics(request.dbsession)
            if t.kind == "marketing" and receives_topic(customer, t)
        ],
        "paused_until": preference.paused_until if preference else None,
        "lowered_at": preferences.frequency_lowered_by_us(request.dbsession, customer),
        "pause_months": PAUSE_MONTHS,
        "pause_length": typed.get("length", str(PAUSE_MONTHS[0])),
        "pause_date": typed.get("until", ""),
        "start": typed.get("start", f"{start // 60:02d}:{start % 60:02d}"),
        "end": typed.get("end", f"{end // 60 % 24:02d}:{end % 60:02d}"),
        "timezone": typed.get("timezone", customer.timezone),
        "timezones": _timezones_for(customer),
        "order": order,
        "channel_names": CHANNELS,
    }


def _timezones_for(customer: Customer) -> list[str]:
    """The zones offered, with the customer's own even if it is a legacy name (set by an
    import or the API), so saving the form unchanged keeps it."""
    zones = list(preferences.customer_timezones())
    if customer.timezone and customer.timezone not in zones:
        zones = sorted([*zones, customer.timezone])
    return zones


@view_config(route_name="portal_frequency", request_method="GET", renderer=PAGE)
def frequency_page(request: Any) -> dict[str, Any]:
    return _page(request, require_customer(request), [])


@view_config(route_name="portal_frequency", request_method="POST", renderer=PAGE)
def change_frequency(request: Any) -> Any:
    customer = require_customer(request)
    actor = actor_for(request, customer)
    now = utcnow()
    try:
        preferences.set_frequency(
            request.dbsession, customer, request.POST.get("frequency", ""), actor, now=now
        )
        for name, value in request.POST.items():
            if not name.startswith(TOPIC_FIELD):
                continue
            key = name[len(TOPIC_FIELD) :]
            topic = request.dbsession.scalar(sa.select(Topic).where(Topic.key == key))
            if topic is None:
                raise InvalidInput.one(name, key, "is not a topic", "unknown_topic")
            preferences.set_topic_frequency(
                request.dbsession, customer, topic, value or None, actor, now=now
            )
    except InvalidInput as error:
        return _page(request, customer, rejected(request, error), submitted(request))
    return back_to(request, "portal_frequency", _("How often we write to you is saved."))


@view_config(route_name="portal_pause", request_method="POST", renderer=PAGE)
def pause(request: Any) -> Any:
    customer = require_customer(request)
    now = utcnow()
    length, date_text = request.POST.get("length", ""), request.POST.get("until", "")
    try:
        until = pause_until(length, date_text, now=now, zone=zone_of(request))
        preferences.pause(request.dbsession, customer, until, actor_for(request, customer), now=now)
    except InvalidInput as error:
        # The service sees a UTC time; the customer typed a date.
        shown = {"paused_until": date_text} if length == "date" else None
        return _page(request, customer, rejected(request, error, shown), submitted(request))
    return back_to(request, "portal_frequency", _("Marketing messages are paused."))


@view_config(route_name="portal_resume", request_method="POST", renderer=PAGE)
def resume(request: Any) -> Any:
    customer = require_customer(request)
    preferences.resume(request.dbsession, customer, actor_for(request, customer), now=utcnow())
    return back_to(request, "portal_frequency", _("Marketing messages are back on."))


@view_config(route_name="portal_hours", request_method="POST", renderer=PAGE)
def change_hours(request: Any) -> Any:
    customer = require_customer(request)
    actor = actor_for(request, customer)
    now = utcnow()
    start_text, end_text = request.POST.get("start", ""), request.POST.get("end", "")
    try:
        start = minute_of(start_text, "contact_hours")
        end = minute_of(end_text, "contact_hours", end=True)
        preferences.set_timezone(
            request.dbsession,
            customer,
            request.POST.get("timezone", ""),
            actor,
            allowed=_timezones_for(customer),
            now=now,
        )
        preferences.set_contact_hours(request.dbsession, customer, start, end, actor, now=now)
    except InvalidInput as error:
        # The service sees minutes after midnight; the customer typed times.
        shown = {"contact_hours": f"{start_text.strip()} - {end_text.strip()}"}
        return _page(request, customer, rejected(request, error, shown), submitted(request))
    return back_to(request, "portal_frequency", _("Your contact hours are saved."))


@view_config(route_name="portal_order", request_method="POST", renderer=PAGE)
def change_order(request: Any) -> Any:
    customer = require_customer(request)
    order = [request.POST.get(f"order{n}", "") for n in range(1, len(CHANNELS) + 1)]
    try:
        preferences.set_channel_order(
            request.dbsession, customer, order, actor_for(request, customer), now=utcnow()
        )
    except InvalidInput as error:
        return _page(request, customer, rejected(request, error), submitted(request))
    return back_to(request, "portal_frequency", _("Your channel order is saved."))
