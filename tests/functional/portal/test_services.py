"""The portal's own services: throttle windows and call-back requests."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from prefcenter.errors import InvalidInput
from prefcenter.models import CallbackRequest, Interaction, ThrottleWindow
from prefcenter.services import throttle
from prefcenter.services.callbacks import BusinessHours, request_callback
from prefcenter.settings import SettingsError
from tests.factories import make_customer

# A Monday, 10:30 in Paris.
MONDAY = dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def test_throttle_allows_up_to_the_limit_per_window(dbsession):
    hits = [throttle.hit(dbsession, "t:a", limit=2, window=HOUR, now=MONDAY) for _ in range(3)]
    assert hits == [True, True, False]
    # Another bucket, and the next window, start again.
    assert throttle.hit(dbsession, "t:b", limit=2, window=HOUR, now=MONDAY)
    assert throttle.hit(dbsession, "t:a", limit=2, window=HOUR, now=MONDAY + HOUR)


def test_throttle_prune_forgets_old_windows(dbsession):
    throttle.hit(dbsession, "t:old", limit=1, window=HOUR, now=MONDAY - 3 * HOUR)
    throttle.hit(dbsession, "t:new", limit=1, window=HOUR, now=MONDAY)
    assert throttle.prune(dbsession, older_than=MONDAY - HOUR) == 1
    assert dbsession.scalars(sa.select(ThrottleWindow.bucket)).all() == ["t:new"]


def test_business_hours_from_settings():
    hours = BusinessHours.from_settings(
        {"prefcenter.callback.hours": "08:30-12:00", "prefcenter.callback.days": "sat"}
    )
    assert hours.slots() == [(510, 570), (570, 630), (630, 690), (690, 720)]
    assert all(d.weekday() == 5 for d in hours.open_days(MONDAY.date()))
    with pytest.raises(SettingsError) as error:
        BusinessHours.from_settings(
            {"prefcenter.callback.hours": "18:00-09:00", "prefcenter.callback.days": "caturday"}
        )
    assert len(error.value.problems) == 2


def test_call_back_today_only_in_slots_not_started(dbsession):
    customer = make_customer(dbsession, phone="+33612345678")
    hours = BusinessHours()
    with pytest.raises(InvalidInput) as error:
        request_callback(dbsession, customer, MONDAY.date(), 600, hours=hours, now=MONDAY)
    assert error.value.errors[0].code == "past"
    callback = request_callback(
        dbsession, customer, MONDAY.date(), 660, hours=hours, note=" Carte ", now=MONDAY
    )
    assert (callback.slot_start, callback.slot_end, callback.note) == (660, 720, "Carte")
    assert callback.phone == "+33612345678" and callback.timezone == "Europe/Paris"
    interaction = dbsession.scalars(sa.select(Interaction)).one()
    assert interaction.kind == "callback_request" and customer.last_interaction_at == MONDAY

    # The same slot asked again: the same request, with the latest number; no second call.
    again = request_callback(
        dbsession, customer, MONDAY.date(), 660, hours=hours, phone="0698765432", now=MONDAY
    )
    assert again.id == callback.id and again.phone == "+33698765432" and again.note == "Carte"
    assert len(dbsession.scalars(sa.select(Interaction)).all()) == 1
    other = request_callback(dbsession, customer, MONDAY.date(), 720, hours=hours, now=MONDAY)
    assert other.id != callback.id


def test_call_back_lists_every_problem_and_writes_nothing(dbsession):
    customer = make_customer(dbsession, phone=None)
    saturday = MONDAY.date() + dt.timedelta(days=5)
    with pytest.raises(InvalidInput) as error:
        request_callback(
            dbsession, customer, saturday, 600, hours=BusinessHours(), note="x" * 501, now=MONDAY
        )
    assert [e.code for e in error.value.errors] == ["bad_day", "required", "too_long"]
    assert dbsession.scalars(sa.select(CallbackRequest)).all() == []


def test_portal_routes(app):
    from pyramid.interfaces import IRoutesMapper

    routes = {r.name: r.pattern for r in app.registry.getUtility(IRoutesMapper).get_routes()}
    portal = {
        name: pattern for name, pattern in routes.items() if name.startswith(("portal", "unsub"))
    }
    assert portal == {
        "portal_link": "/p/{token}",
        "portal_login": "/portal/login",
        "portal_logout": "/portal/logout",
        "portal_home": "/portal",
        "portal_channels": "/portal/channels",
        "portal_address": "/portal/address/{kind}",
        "portal_consent": "/portal/channels/{channel}/{action}",
        "portal_confirm_email": "/portal/confirm/{token}",
        "portal_topics": "/portal/topics",
        "portal_frequency": "/portal/frequency",
        "portal_pause": "/portal/pause",
        "portal_resume": "/portal/resume",
        "portal_hours": "/portal/hours",
        "portal_order": "/portal/order",
        "portal_callback": "/portal/callback",
        "portal_data": "/portal/data",
        "portal_export": "/portal/data/export.json",
        "portal_erase": "/portal/data/erase",
        "unsubscribe": "/u/{token}",
        "unsubscribe_all": "/u/{token}/all",
    }
