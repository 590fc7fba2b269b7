"""The portal's own pages for an expired form (CSRF) and a page that does not exist.

Pyramid's defaults are bare English pages; inside the portal the customer gets the
portal's layout, in their language, with a way back. Only for the portal's paths: the API
answers its errors as JSON problems (prefcenter.api).
"""

from __future__ import annotations

from typing import Any

from pyramid.exceptions import BadCSRFToken
from pyramid.httpexceptions import HTTPNotFound
from pyramid.view import exception_view_config

from ..rendering import PAGE_OF_FORM, SECURITY_HEADERS

PAGE = "prefcenter.portal:templates/problem.html"
# The customer's side of the site: the portal, signed links (/p/) and unsubscribe (/u/).
PORTAL_PATHS = r"^/(portal|p|u)(/|$)"


def _protect(request: Any) -> None:
    # An error page changes nothing, and gets the portal's headers like any portal page.
    request.tm.doom()
    for name, value in SECURITY_HEADERS.items():
        request.response.headers.setdefault(name, value)


def _form_page(request: Any) -> str:
    """Where the expired form can be found again."""
    route = request.matched_route.name if request.matched_route else None
    if route in PAGE_OF_FORM:
        return str(request.route_url(PAGE_OF_FORM[route], **request.matchdict))
    if route is not None:
        return str(request.path_url)
    return str(request.route_url("portal_home"))


@exception_view_config(BadCSRFToken, path_info=PORTAL_PATHS, renderer=PAGE)
def form_expired(exc: BadCSRFToken, request: Any) -> dict[str, Any]:
    """A form sent with a missing or stale CSRF token (most often: the session expired)."""
    _protect(request)
    request.response.status_int = 400
    return {"problem": "form_expired", "back": _form_page(request)}


@exception_view_config(HTTPNotFound, path_info=PORTAL_PATHS, renderer=PAGE)
def not_found(exc: HTTPNotFound, request: Any) -> dict[str, Any]:
    _protect(request)
    request.response.status_int = 404
    return {"problem": "not_found", "back": str(request.route_url("portal_home"))}
