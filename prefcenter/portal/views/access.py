"""Getting in without a password: signed links, magic links by email, logging out."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pyramid.httpexceptions import HTTPSeeOther
from pyramid.view import view_config

from ... import tokens
from ...addresses import address_hmac, normalize_email
from ...errors import InvalidInput
from ...i18n import _
from ...models import Customer
from ...services import interactions, preferences, throttle
from ..auth import current_customer, log_in, log_out
from ..courier import PortalMessage
from ..links import portal_token, read_portal_token
from ..rendering import translator
from .common import portal_settings, utcnow

TEMPLATES = "prefcenter.portal:templates/"
HOUR = dt.timedelta(hours=1)


@view_config(route_name="portal_link", request_method="GET", renderer=TEMPLATES + "link_error.html")
def open_link(request: Any) -> Any:
    """A signed link from a message: start a session for its customer, then go home."""
    settings = portal_settings(request)
    try:
        customer_id = read_portal_token(settings.secret, request.matchdict["token"], now=utcnow())
    except tokens.TokenExpired:
        request.response.status_int = 403
        return {"expired": True}
    except tokens.BadToken:
        request.response.status_int = 400
        return {"expired": False}
    customer = request.dbsession.get(Customer, customer_id)
    if customer is None or customer.erased_at is not None:
        request.response.status_int = 400
        return {"expired": False}
    log_in(request, customer)
    _record_visit(request, customer)
    return HTTPSeeOther(request.route_url("portal_home"))


def _record_visit(request: Any, customer: Customer) -> None:
    """A portal visit is an inbound interaction (the customer is not dormant); one a day."""
    if not customer.external_id:
        return  # interactions are keyed by the loyalty member id
    now = utcnow()
    interactions.ingest(
        request.dbsession,
        "portal",
        [
            interactions.NewInteraction(
                external_id=customer.external_id,
                kind="portal_visit",
                occurred_at=now,
                idempotency_key=f"portal-visit:{customer.id}:{now.date().isoformat()}",
                data={},
            )
        ],
        now=now,
    )


@view_config(route_name="portal_login", request_method="GET", renderer=TEMPLATES + "login.html")
def login_form(request: Any) -> Any:
    if current_customer(request) is not None:
        return HTTPSeeOther(request.route_url("portal_home"))
    return {"sent": False, "errors": [], "email": ""}


@view_config(route_name="portal_login", request_method="POST", renderer=TEMPLATES + "login.html")
def ask_for_link(request: Any) -> dict[str, Any]:
    """Send a magic link; the answer is the same whether or not the address is known."""
    t = translator(request)
    settings = portal_settings(request)
    raw = request.POST.get("email", "")
    try:
        email = normalize_email(raw, "email")
    except InvalidInput:
        request.response.status_int = 400
        return {
            "sent": False,
            "email": raw,
            "errors": [t(_("This is not a valid email address."))],
        }
    now = utcnow()
    # Buckets hold an HMAC, never the address itself.
    address_bucket = "magic-link:email:" + address_hmac(
        settings.consent.address_key, "email", email
    )
    ip_bucket = f"magic-link:ip:{request.client_addr or 'unknown'}"
    allowed_ip = throttle.hit(
        request.dbsession, ip_bucket, limit=settings.magic_per_ip, window=HOUR, now=now
    )
    allowed_address = throttle.hit(
        request.dbsession, address_bucket, limit=settings.magic_per_address, window=HOUR, now=now
    )
    if not (allowed_ip and allowed_address):
        request.response.status_int = 429
        request.response.headers["Retry-After"] = "3600"
        return {
            "sent": False,
            "email": raw,
            "errors": [t(_("Too many requests: please try again in an hour."))],
        }
    throttle.prune(request.dbsession, older_than=now - 24 * HOUR)
    # Only to an address the customer proved is theirs: anyone can type any address in.
    for customer in preferences.confirmed_email_owners(
        request.dbsession, email, cfg=settings.consent
    ):
        token = portal_token(settings.secret, customer.id, hours=settings.link_hours, now=now)
        request.registry["portal.courier"].send(
            PortalMessage(
                kind="magic_link",
                customer_id=customer.id,
                channel="email",
                to=email,
                locale=request.localizer.locale_name,
                link=request.route_url("portal_link", token=token),
            )
        )
    return {"sent": True, "email": "", "errors": [], "hours": settings.link_hours}


@view_config(route_name="portal_logout", request_method="GET", renderer=TEMPLATES + "logout.html")
def logout_form(request: Any) -> Any:
    """A typed or bookmarked /portal/logout: a button, since logging out stays a POST."""
    if current_customer(request) is None:
        return HTTPSeeOther(request.route_url("portal_login"))
    return {}


@view_config(route_name="portal_logout", request_method="POST")
def logout(request: Any) -> HTTPSeeOther:
    lang = request.localizer.locale_name
    log_out(request)
    request.session["lang"] = lang
    request.session.flash(translator(request)(_("You are logged out.")), "success")
    return HTTPSeeOther(request.route_url("portal_login"))
