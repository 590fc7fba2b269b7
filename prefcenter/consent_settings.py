"""Consent settings shared by the contact policy and the preference services.

One object, read once from the settings, so the policy that decides and the services that
record consent can never disagree about a channel's regime or the address HMAC key.

Settings (all optional except ``prefcenter.secret``)::

    prefcenter.address_hmac_key          key for address HMACs (default: derived from the secret;
                                         set it to rotate the secret without losing suppressions)
    prefcenter.policy.regime.<channel>   opt_in | opt_out (email, sms: opt_in; phone, post: opt_out)
    prefcenter.policy.confirm_channels   channels whose address must be confirmed ("email sms")
    prefcenter.double_opt_in.hours       lifetime of a confirmation code or link (48)
    prefcenter.double_opt_in.max_attempts  wrong codes allowed per challenge (5)
    prefcenter.default_timezone          IANA name used when a customer has none (Europe/Paris)
    prefcenter.default_contact_hours     "09:00-20:00"
    prefcenter.default_channel_order     "email sms phone post"
"""

from __future__ import annotations

import dataclasses
import re
import zoneinfo
from collections.abc import Mapping
from typing import Any

from .addresses import derive_key
from .errors import InvalidField, InvalidInput
from .models.vocabulary import CHANNELS, REGIMES
from .settings import SettingsError

DEFAULT_REGIMES: dict[str, str] = {
    "email": "opt_in",
    "sms": "opt_in",
    "phone": "opt_out",
    "post": "opt_out",
}
MIN_KEY_LENGTH = 32
_HOURS = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


def format_minute(minute: int) -> str:
    """``540`` -> ``"09:00"``; 1440 is ``"24:00"`` (the end of the day)."""
    return f"{minute // 60:02d}:{minute % 60:02d}"


def format_contact_hours(start: int | None, end: int | None) -> str | None:
    """``(540, 1200)`` -> ``"09:00-20:00"``; None when the default window applies."""
    if start is None or end is None:
        return None
    return f"{format_minute(start)}-{format_minute(end)}"


def parse_contact_hours(text: str) -> tuple[int, int] | None:
    """``"09:00-20:00"`` -> ``(540, 1200)``, or None if it is not a valid window."""
    match = _HOURS.match(text.strip())
    if not match:
        return None
    sh, sm, eh, em = (int(g) for g in match.groups())
    start, end = sh * 60 + sm, eh * 60 + em
    if sm > 59 or em > 59 or not 0 <= start < 1440 or not 0 <= end <= 1440 or start == end:
        return None
    return start, end


def _words(value: Any) -> list[str]:
    return [w for w in re.split(r"[\s,]+", str(value).strip()) if w]


@dataclasses.dataclass(frozen=True)
class ConsentSettings:
    """What consent means here: regimes per channel, confirmation rules, defaults."""

    address_key: bytes
    regimes: dict[str, str] = dataclasses.field(default_factory=lambda: dict(DEFAULT_REGIMES))
    confirm_channels: frozenset[str] = frozenset({"email", "sms"})
    double_opt_in_hours: int = 48
    max_code_attempts: int = 5
    default_timezone: str = "Europe/Paris"
    # Minutes after local midnight: 09:00-20:00.
    default_contact_hours: tuple[int, int] = (540, 1200)
    default_channel_order: tuple[str, ...] = CHANNELS

    def regime(self, channel: str) -> str:
        return self.regimes[channel]

    def needs_confirmation(self, channel: str) -> bool:
        return channel in self.confirm_channels

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> ConsentSettings:
        """Read and check every consent setting; SettingsError lists all problems at once."""
        problems: list[str] = []

        raw_key = settings.get("prefcenter.address_hmac_key")
        if raw_key:
            if len(str(raw_key)) < MIN_KEY_LENGTH:
                problems.append(
                    f"prefcenter.address_hmac_key: must be at least {MIN_KEY_LENGTH} characters "
                    f"long, got {len(str(raw_key))}"
                )
            address_key = str(raw_key).encode()
        elif settings.get("prefcenter.secret"):
            address_key = derive_key(str(settings["prefcenter.secret"]), "address-hmac")
        else:
            problems.append(
                "prefcenter.secret (PREFCENTER_SECRET): needed to derive the address HMAC key"
            )
            address_key = b""

        regimes = dict(DEFAULT_REGIMES)
        for channel in CHANNELS:
            key = f"prefcenter.policy.regime.{channel}"
            if key in settings:
                value = str(settings[key]).strip()
                if value in REGIMES:
                    regimes[channel] = value
                else:
                    problems.append(
                        f"{key}: {value!r} is not a regime (expected {' or '.join(REGIMES)})"
                    )

        confirm_channels = frozenset({"email", "sms"})
        if "prefcenter.policy.confirm_channels" in settings:
            names = _words(settings["prefcenter.policy.confirm_channels"])
            unknown = [n for n in names if n not in CHANNELS]
            if unknown:
                problems.append(
                    f"prefcenter.policy.confirm_channels: unknown channel(s) {', '.join(unknown)} "
                    f"(channels: {', '.join(CHANNELS)})"
                )
            confirm_channels = frozenset(n for n in names if n in CHANNELS)

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

        hours = integer("prefcenter.double_opt_in.hours", 48, 1, 720)
        attempts = integer("prefcenter.double_opt_in.max_attempts", 5, 1, 100)

        timezone = str(settings.get("prefcenter.default_timezone", "Europe/Paris")).strip()
        if timezone not in zoneinfo.available_timezones():
            problems.append(
                f"prefcenter.default_timezone: {timezone!r} is not an IANA time zone "
                "(e.g. Europe/Paris)"
            )

        contact_hours: tuple[int, int] = (540, 1200)
        if "prefcenter.default_contact_hours" in settings:
            parsed = parse_contact_hours(str(settings["prefcenter.default_contact_hours"]))
            if parsed is None:
                problems.append(
                    f"prefcenter.default_contact_hours: "
                    f"{settings['prefcenter.default_contact_hours']!r} is not a window "
                    "like 09:00-20:00"
                )
            else:
                contact_hours = parsed

        order: tuple[str, ...] = CHANNELS
        if "prefcenter.default_channel_order" in settings:
            names = _words(settings["prefcenter.default_channel_order"])
            if sorted(names) != sorted(CHANNELS):
                problems.append(
                    f"prefcenter.default_channel_order: "
                    f"{settings['prefcenter.default_channel_order']!r} must list each of "
                    f"{', '.join(CHANNELS)} once"
                )
            else:
                order = tuple(names)

        if problems:
            raise SettingsError(problems)
        return cls(
            address_key=address_key,
            regimes=regimes,
            confirm_channels=confirm_channels,
            double_opt_in_hours=hours,
            max_code_attempts=attempts,
            default_timezone=timezone,
            default_contact_hours=contact_hours,
            default_channel_order=order,
        )


# Which address each channel uses (and whose HMAC a suppression on that channel matches).
ADDRESS_KIND: dict[str, str] = {
    "email": "email",
    "sms": "phone",
    "phone": "phone",
    "post": "postal",
}


def invalid_field(field: str, value: Any, reason: str, code: str) -> InvalidField:
    """An InvalidField with a stable machine ``code`` the portal can translate."""
    return InvalidField(field, value, reason, code)


def invalid(field: str, value: Any, reason: str, code: str) -> InvalidInput:
    return InvalidInput([invalid_field(field, value, reason, code)])
