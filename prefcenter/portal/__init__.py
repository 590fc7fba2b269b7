"""The customer self-service portal: signed links and magic links instead of passwords,
then channels, topics, frequency, hours, pause, call-back and data rights, in French and
English, server-rendered and usable without JavaScript.

Views only gather input and call :mod:`prefcenter.services`; every change goes through
:mod:`prefcenter.services.preferences`, which writes the consent ledger.
"""

from __future__ import annotations

from typing import Any

from .config import PortalSettings


def includeme(config: Any) -> None:
    from . import rendering
    from .courier import LogCourier

    settings = PortalSettings.from_settings(config.get_settings())
    config.registry["portal.settings"] = settings
    # Replaceable (tests record what would be sent); the campaign engine brings real sending.
    config.registry["portal.courier"] = LogCourier(production=settings.production)
    config.set_locale_negotiator(rendering.negotiate_locale)
    config.add_subscriber(rendering.add_template_helpers, "pyramid.events.BeforeRender")
    config.add_subscriber(rendering.security_headers, "pyramid.events.NewResponse")
    config.scan(".views")
