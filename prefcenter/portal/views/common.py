"""Small helpers shared by the portal's views."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyramid.httpexceptions import HTTPSeeOther

from ...errors import InvalidInput
from ...models import utcnow
from ..config import PortalSettings
from ..errors import messages
from ..rendering import translator

__all__ = ["back_to", "portal_settings", "rejected", "submitted", "utcnow"]


def portal_settings(request: Any) -> PortalSettings:
    settings: PortalSettings = request.registry["portal.settings"]
    return settings


def back_to(request: Any, route: str, flash: str | None = None, **mapping: Any) -> HTTPSeeOther:
    """Post/redirect/get, with a message shown once on the next page."""
    if flash:
        request.session.flash(translator(request)(flash, **mapping), "success")
    return HTTPSeeOther(request.route_url(route))


def rejected(
    request: Any, error: InvalidInput, shown: Mapping[str, str] | None = None
) -> list[str]:
    """The messages for a rejected form; the transaction is doomed so nothing is kept.

    ``shown``: what the customer typed for a field, to name in the message instead of the
    value the service saw.
    """
    request.tm.doom()
    request.response.status_int = 400
    return messages(error, translator(request), shown)


def submitted(request: Any) -> dict[str, str]:
    """What the customer submitted, to fill the form again after an error."""
    return {k: v for k, v in request.POST.items() if k != "csrf_token"}
