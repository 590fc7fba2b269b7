"""Unsubscribe from a signed link, without logging in — and RFC 8058 one-click.

``GET /u/{token}`` changes nothing (mail scanners follow links) and shows a confirmation
form. ``POST /u/{token}`` with ``List-Unsubscribe=One-Click`` unsubscribes: no cookie, no
CSRF token (the signed token is the authorization; a mailbox provider sends this POST),
200 without a redirect, idempotent. An invalid token changes nothing and says nothing
about any customer.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pyramid.view import view_config

from ... import tokens
from ...models import Customer, Topic
from ...services import preferences
from ..auth import actor_for
from ..links import read_unsubscribe_token
from ..rendering import LOCALE_HINT
from .common import portal_settings, utcnow

PAGE = "prefcenter.portal:templates/unsubscribe.html"
ONE_CLICK = ("List-Unsubscribe", "One-Click")


def _target(request: Any) -> tuple[Customer, Topic | None, str | None] | dict[str, Any]:
    """(customer, topic or None for all marketing) from the token, or the error page."""
    try:
        customer_id, topic_key = read_unsubscribe_token(
            portal_settings(request).secret, request.matchdict["token"], now=utcnow()
        )
    except tokens.TokenExpired:
        request.response.status_int = 403
        return {"state": "expired"}
    except tokens.BadToken:
        request.response.status_int = 400
        return {"state": "invalid"}
    customer = request.dbsession.get(Customer, customer_id)
    topic = None
    if topic_key is not None:
        topic = request.dbsession.scalar(sa.select(Topic).where(Topic.key == topic_key))
    if customer is None or (topic_key is not None and topic is None):
        # Same answer as a forged token: a link reveals nothing about who exists.
        request.response.status_int = 400
        return {"state": "invalid"}
    request.environ[LOCALE_HINT] = customer.locale
    return customer, topic, topic_key


def _marketing_topics(request: Any) -> list[Topic]:
    return list(
        request.dbsession.scalars(
            sa.select(Topic).where(Topic.kind == "marketing").order_by(Topic.key)
        )
    )


def _unsubscribe(request: Any, customer: Customer, topic: Topic | None) -> None:
    actor = actor_for(request, customer)
    for each in [topic] if topic is not None else _marketing_topics(request):
        preferences.set_subscription(request.dbsession, customer, each, False, actor, now=utcnow())


def _page(request: Any, topic: Topic | None, state: str) -> dict[str, Any]:
    locale = request.localizer.locale_name
    return {"state": state, "topic_name": topic.name(locale) if topic else None}


@view_config(route_name="unsubscribe", request_method="GET", renderer=PAGE)
def confirm_form(request: Any) -> dict[str, Any]:
    target = _target(request)
    if isinstance(target, dict):
        return target
    _customer, topic, _key = target
    return _page(request, topic, "ask")


@view_config(route_name="unsubscribe", request_method="POST", renderer=PAGE, require_csrf=False)
def one_click(request: Any) -> dict[str, Any]:
    target = _target(request)
    if isinstance(target, dict):
        return target
    customer, topic, _key = target
    if request.POST.get(ONE_CLICK[0]) != ONE_CLICK[1]:
        request.response.status_int = 400
        return _page(request, topic, "ask")
    _unsubscribe(request, customer, topic)
    return _page(request, topic, "done")


@view_config(route_name="unsubscribe_all", request_method="POST", renderer=PAGE)
def all_marketing(request: Any) -> dict[str, Any]:
    """From a topic's page: leave all marketing instead (a form, so CSRF applies)."""
    target = _target(request)
    if isinstance(target, dict):
        return target
    customer, _topic, _key = target
    _unsubscribe(request, customer, None)
    return _page(request, None, "done")
