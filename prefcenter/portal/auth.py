"""Who the portal is talking to: a customer id kept in the signed session cookie."""

from __future__ import annotations

import uuid
from typing import Any

from pyramid.httpexceptions import HTTPSeeOther

from ..models import Customer
from ..services.ledger import Actor

SESSION_KEY = "customer_id"
_CACHE = "prefcenter.portal.customer"


def log_in(request: Any, customer: Customer) -> None:
    """A fresh session for the customer (a new cookie: no session fixation)."""
    lang = request.session.get("lang")
    request.session.invalidate()
    request.session[SESSION_KEY] = str(customer.id)
    if lang:
        request.session["lang"] = lang
    request.environ[_CACHE] = customer


def log_out(request: Any) -> None:
    request.session.invalidate()
    request.environ[_CACHE] = None


def current_customer(request: Any) -> Customer | None:
    """The logged-in customer, or None (no session, unknown id, or erased)."""
    if _CACHE in request.environ:
        return request.environ[_CACHE]  # type: ignore[no-any-return]
    customer = None
    raw = request.session.get(SESSION_KEY)
    if raw:
        try:
            customer = request.dbsession.get(Customer, uuid.UUID(str(raw)))
        except ValueError:
            customer = None
        if customer is not None and customer.erased_at is not None:
            customer = None
    request.environ[_CACHE] = customer
    return customer


def require_customer(request: Any) -> Customer:
    customer = current_customer(request)
    if customer is None:
        raise HTTPSeeOther(request.route_url("portal_login"))
    return customer


def actor_for(request: Any, customer: Customer) -> Actor:
    """The customer as the ledger records them, with the request's IP and user agent."""
    return Actor.customer(customer.id, ip=request.client_addr, user_agent=request.user_agent)
