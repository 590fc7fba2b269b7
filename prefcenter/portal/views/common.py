"""Small helpers shared by the portal's views."""

from __future__ import annotations

from typing import Any

from pyramid.httpexceptions import HTTPSeeOther

from ...errors import InvalidInput
from ...models import utcnow
from ..config import PortalSettings
from ..errors import messages
from ..rendering import translator

__all__ = ["back_to", "portal_settings", "rejected", "utcnow"]


def portal_settings(request: Any) -> PortalSettings:
    settings: PortalSettings = request.registry["portal.settings"]
    return settings


def back_to(request: Any, route: str, flash: str | None = None, **mapping: Any) -> HTTPSeeOther:
    """Post/redirect/get, with a message shown once on the next page."""
    if flash:
        request.session.flash(translator(request)(flash, **mapping), "success")
    return HTTPSeeOther(request.route_url(route))


def rejected(request: Any, error: InvalidInput) -> list[str]:
    """The messages for a rejected form; the transaction is doomed so nothing is kept."""
    request.tm.doom()
    request.response.status_int = 400
    return messages(error, translator(request))
