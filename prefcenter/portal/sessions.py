"""Cookie sessions and CSRF for the whole app.

The session is a signed cookie (HMAC with a key derived from the server secret): HttpOnly,
SameSite=Lax, Secure in production. Every unsafe request needs a CSRF token; views that
authenticate otherwise (the API's bearer keys, the RFC 8058 one-click unsubscribe, whose
signed token is the authorization) opt out with ``require_csrf=False``.
"""

from __future__ import annotations

from typing import Any

from pyramid.session import SignedCookieSessionFactory

from ..addresses import derive_key

COOKIE_NAME = "prefcenter_session"
IDLE_TIMEOUT_SECONDS = 3600


def includeme(config: Any) -> None:
    settings = config.get_settings()
    factory = SignedCookieSessionFactory(
        derive_key(str(settings["prefcenter.secret"]), "session-cookie").hex(),
        cookie_name=COOKIE_NAME,
        secure=str(settings.get("prefcenter.env", "")).strip() == "production",
        httponly=True,
        samesite="Lax",
        timeout=IDLE_TIMEOUT_SECONDS,
        reissue_time=IDLE_TIMEOUT_SECONDS // 10,
        hashalg="sha512",
    )
    config.set_session_factory(factory)
    config.set_default_csrf_options(require_csrf=True)
