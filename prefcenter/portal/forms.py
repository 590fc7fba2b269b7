"""Reading the portal's form fields into plain values for the services.

Each reader returns the value or raises InvalidInput naming the field, so a view can show
the customer what to fix and the services receive only well-typed values.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from zoneinfo import ZoneInfo

from ..errors import InvalidInput

PAUSE_MONTHS = (1, 3, 6)
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")


def minute_of(text: str, field: str, *, end: bool = False) -> int:
    """``"09:30"`` -> 570; as an end time ``"00:00"`` means midnight at the end of the day."""
    match = _TIME.match((text or "").strip())
    if not match:
        raise InvalidInput.one(field, text, "is not a time like 09:00", "out_of_range")
    hour, minute = int(match.group(1)), int(match.group(2))
    if hour > 23 or minute > 59:
        raise InvalidInput.one(field, text, "is not a time like 09:00", "out_of_range")
    value = hour * 60 + minute
    return 1440 if end and value == 0 else value


def add_months(moment: dt.datetime, months: int) -> dt.datetime:
    """The same wall time ``months`` later (the 31st becomes the month's last day)."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    last = calendar.monthrange(year, month)[1]
    return moment.replace(year=year, month=month, day=min(moment.day, last))


def pause_until(choice: str, date_text: str, *, now: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """When a pause chosen as "1", "3", "6" (months) or "date" (with a date) ends, in UTC."""
    if choice in {str(m) for m in PAUSE_MONTHS}:
        local = now.astimezone(zone)
        return add_months(local, int(choice)).astimezone(dt.UTC)
    if choice == "date":
        try:
            day = dt.date.fromisoformat((date_text or "").strip())
        except ValueError:
            raise InvalidInput.one(
                "paused_until", date_text, "is not a date", "invalid_datetime"
            ) from None
        # Messages come back at the start of that day, the customer's time.
        return dt.datetime.combine(day, dt.time(), tzinfo=zone).astimezone(dt.UTC)
    raise InvalidInput.one("paused_until", choice, "is not a pause length", "invalid")


def callback_day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat((text or "").strip())
    except ValueError:
        raise InvalidInput.one("day", text, "is not a date", "bad_day") from None


def whole_number(text: str, field: str, code: str) -> int:
    try:
        return int((text or "").strip())
    except ValueError:
        raise InvalidInput.one(field, text, "is not a number", code) from None
