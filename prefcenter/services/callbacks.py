"""Call-back requests: the customer picks a day and a slot inside business hours.

A request is stored twice on purpose: as a ``CallbackRequest`` (the contact center's call
list) and as an inbound ``Interaction`` of kind ``callback_request`` (the customer is
engaged, so not dormant).

Settings::

    prefcenter.callback.hours   business hours, "09:00-18:00"
    prefcenter.callback.days    business days, "mon tue wed thu fri"
    prefcenter.callback.slot_minutes   length of a slot (60)
    prefcenter.callback.days_ahead     how far ahead a day may be chosen (14)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..addresses import normalize_phone
from ..consent_settings import invalid_field, parse_contact_hours
from ..errors import InvalidField, InvalidInput
from ..models import CallbackRequest, Customer, Interaction, utcnow
from ..settings import SettingsError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_NOTE_LENGTH = 500
SOURCE = "portal"


@dataclasses.dataclass(frozen=True)
class BusinessHours:
    """When the contact center calls back, in the customer's own timezone."""

    start: int = 540  # minutes after midnight
    end: int = 1080
    days: frozenset[int] = frozenset(range(5))  # Monday = 0
    slot_minutes: int = 60
    days_ahead: int = 14

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> BusinessHours:
        problems: list[str] = []
        start, end = 540, 1080
        raw = settings.get("prefcenter.callback.hours")
        if raw:
            parsed = parse_contact_hours(str(raw))
            if parsed is None or parsed[0] >= parsed[1]:
                problems.append(
                    f"prefcenter.callback.hours: {raw!r} is not a window like 09:00-18:00"
                )
            else:
                start, end = parsed
        days = frozenset(range(5))
        raw_days = settings.get("prefcenter.callback.days")
        if raw_days:
            names = [w.lower() for w in re.split(r"[\s,]+", str(raw_days).strip()) if w]
            unknown = [n for n in names if n not in WEEKDAYS]
            if unknown or not names:
                problems.append(
                    f"prefcenter.callback.days: {raw_days!r} must list days among "
                    f"{' '.join(WEEKDAYS)}"
                )
            else:
                days = frozenset(WEEKDAYS.index(n) for n in names)

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

        slot = integer("prefcenter.callback.slot_minutes", 60, 15, 240)
        ahead = integer("prefcenter.callback.days_ahead", 14, 1, 90)
        if problems:
            raise SettingsError(problems)
        return cls(start=start, end=end, days=days, slot_minutes=slot, days_ahead=ahead)

    def slots(self) -> list[tuple[int, int]]:
        """Every slot of a business day, (start, end) in minutes."""
        result = []
        minute = self.start
        while minute < self.end:
            result.append((minute, min(minute + self.slot_minutes, self.end)))
            minute += self.slot_minutes
        return result

    def open_days(self, today: dt.date) -> list[dt.date]:
        """Business days a call back may be asked for: today to ``days_ahead`` days on."""
        return [
            day
            for day in (today + dt.timedelta(days=n) for n in range(self.days_ahead + 1))
            if day.weekday() in self.days
        ]

    def available_slots(self, day: dt.date, local_now: dt.datetime) -> list[tuple[int, int]]:
        """The slots of ``day`` that have not started yet at ``local_now``."""
        if day.weekday() not in self.days:
            return []
        if day < local_now.date():
            return []
        if day > local_now.date():
            return self.slots()
        minute = local_now.hour * 60 + local_now.minute
        return [s for s in self.slots() if s[0] > minute]


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "Europe/Paris")
    except (KeyError, ValueError):
        return ZoneInfo("Europe/Paris")


def request_callback(
    session: Session,
    customer: Customer,
    day: dt.date,
    slot_start: int,
    *,
    hours: BusinessHours,
    phone: str | None = None,
    note: str | None = None,
    topic_key: str | None = None,
    now: dt.datetime | None = None,
) -> CallbackRequest:
    """Put the customer on the call list for ``day`` in the slot starting at ``slot_start``.

    The phone is the one given, else the customer's. InvalidInput lists every bad field and
    nothing is written.
    """
    now = now or utcnow()
    zone = _zone(customer.timezone)
    local_now = now.astimezone(zone)
    errors: list[InvalidField] = []
    if customer.erased_at is not None:
        errors.append(invalid_field("customer", str(customer.id), "has been erased", "erased"))
    slot = next((s for s in hours.slots() if s[0] == slot_start), None)
    if day not in hours.open_days(local_now.date()):
        errors.append(
            invalid_field("day", day.isoformat(), "is not a business day we can call", "bad_day")
        )
    elif slot is None:
        errors.append(
            invalid_field("slot", slot_start, "is not a slot inside business hours", "bad_slot")
        )
    elif slot not in hours.available_slots(day, local_now):
        errors.append(invalid_field("slot", slot_start, "has already started", "past"))
    number: str | None = None
    raw_phone = (phone or "").strip() or customer.phone
    if not raw_phone:
        errors.append(invalid_field("phone", phone, "is required to call you back", "required"))
    else:
        try:
            number = normalize_phone(raw_phone, "phone")
        except InvalidInput:
            errors.append(
                invalid_field("phone", phone, "is not a valid phone number", "invalid_phone")
            )
    note = (note or "").strip() or None
    if note is not None and len(note) > MAX_NOTE_LENGTH:
        errors.append(
            invalid_field(
                "note", note[:50] + "…", f"is longer than {MAX_NOTE_LENGTH} characters", "too_long"
            )
        )
    if errors:
        raise InvalidInput(errors)
    assert slot is not None
    same = session.scalars(
        sa.select(CallbackRequest).where(
            CallbackRequest.customer_id == customer.id,
            CallbackRequest.day == day,
            CallbackRequest.slot_start == slot[0],
            CallbackRequest.status == "requested",
        )
    ).first()
    if same is not None:
        # Asked twice (a double click, the form sent again): one call, the latest details.
        same.phone, same.note = number, note or same.note
        return same
    callback = CallbackRequest(
        id=uuid.uuid4(),
        customer_id=customer.id,
        day=day,
        slot_start=slot[0],
        slot_end=slot[1],
        timezone=zone.key,
        phone=number,
        topic_key=topic_key,
        note=note,
        status="requested",
    )
    session.add(callback)
    session.add(
        Interaction(
            customer_id=customer.id,
            kind="callback_request",
            occurred_at=now,
            source=SOURCE,
            idempotency_key=f"callback:{callback.id}",
            data={"day": day.isoformat(), "slot_start": slot[0], "slot_end": slot[1]},
        )
    )
    if customer.last_interaction_at is None or customer.last_interaction_at < now:
        customer.last_interaction_at = now
    session.flush()
    return callback
