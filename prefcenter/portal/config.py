"""Portal settings, read and checked once at start-up.

::

    prefcenter.portal.link_hours              lifetime of a signed portal link (72)
    prefcenter.unsubscribe.link_days          lifetime of an unsubscribe link (90)
    prefcenter.portal.magic_link.per_address  magic links per address per hour (3)
    prefcenter.portal.magic_link.per_ip       magic-link requests per IP per hour (20)
    prefcenter.env                            production makes the session cookie Secure
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..consent_settings import ConsentSettings
from ..services.callbacks import BusinessHours
from ..settings import SettingsError


@dataclasses.dataclass(frozen=True)
class PortalSettings:
    secret: str
    consent: ConsentSettings
    business_hours: BusinessHours
    production: bool = False
    link_hours: int = 72
    unsubscribe_days: int = 90
    magic_per_address: int = 3
    magic_per_ip: int = 20

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> PortalSettings:
        problems: list[str] = []

        def integer(key: str, default: int, low: int, high: int) -> int:
            if key not in settings:
                return default
            try:
                value = int(str(settings[key]).strip())
            except ValueError:
                value = low - 1
            if not low <= value <= high:
                problems.append(f"{key}: {settings[key]!r} must be a whole number {low}..{high}")
                return default
            return value

        link_hours = integer("prefcenter.portal.link_hours", 72, 1, 24 * 90)
        unsubscribe_days = integer("prefcenter.unsubscribe.link_days", 90, 1, 3650)
        per_address = integer("prefcenter.portal.magic_link.per_address", 3, 1, 1000)
        per_ip = integer("prefcenter.portal.magic_link.per_ip", 20, 1, 100000)
        try:
            consent = ConsentSettings.from_settings(settings)
            hours = BusinessHours.from_settings(settings)
        except SettingsError as exc:
            raise SettingsError(problems + exc.problems) from None
        if problems:
            raise SettingsError(problems)
        return cls(
            secret=str(settings["prefcenter.secret"]),
            consent=consent,
            business_hours=hours,
            production=str(settings.get("prefcenter.env", "")).strip() == "production",
            link_hours=link_hours,
            unsubscribe_days=unsubscribe_days,
            magic_per_address=per_address,
            magic_per_ip=per_ip,
        )
