"""The phone and post channels' hand-over files: the contact center's call list, the print file.

* Call list for one day: the customers who asked to be called back (portal call-back
  requests) first, in the order of their slots, then the campaign calls handed to the
  list; each entry carries the window the customer may be called in, in their own time
  zone and in UTC (their contact hours, or the slot they picked).
* Print file for one campaign: one row per letter with the postal address and the text.

Both come as CSV (for the contact center's or the printer's tools) or JSON.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import uuid
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.orm import Session

from prefcenter.consent_settings import ConsentSettings, format_minute
from prefcenter.models import CallbackRequest, ContactPreference, Customer

from ..models import Campaign, Delivery, OutboxMessage


@dataclasses.dataclass(frozen=True)
class CallEntry:
    kind: str  # callback | campaign
    external_id: str | None
    name: str
    phone: str | None
    timezone: str
    local_window: str  # "09:00-20:00"
    starts_at: dt.datetime  # UTC
    ends_at: dt.datetime  # UTC
    subject: str  # the topic, or the campaign's name
    script: str  # what to say (campaign), or the customer's note (call back)


def _zone(name: str | None, default: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or default)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default)


def _window(day: dt.date, start: int, end: int, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """Local ``[start, end)`` minutes of ``day`` in UTC (an end at or before the start is the
    next day: a window crossing midnight)."""
    midnight = dt.datetime.combine(day, dt.time(), tzinfo=zone)
    begin = midnight + dt.timedelta(minutes=start)
    finish = midnight + dt.timedelta(minutes=end if end > start else end + 1440)
    return begin.astimezone(dt.UTC), finish.astimezone(dt.UTC)


def _name(first: str | None, last: str | None) -> str:
    return " ".join(part for part in (first, last) if part)


def call_list(session: Session, day: dt.date, cfg: ConsentSettings) -> list[CallEntry]:
    """Everyone to call on ``day``: call-back requests first, then campaign calls."""
    entries: list[CallEntry] = []
    callbacks = session.execute(
        sa.select(CallbackRequest, Customer.external_id, Customer.first_name, Customer.last_name)
        .join(Customer, Customer.id == CallbackRequest.customer_id)
        .where(
            CallbackRequest.day == day,
            CallbackRequest.status == "requested",
            Customer.erased_at.is_(None),
        )
        .order_by(CallbackRequest.slot_start, CallbackRequest.created_at)
    ).all()
    for request, external_id, first, last in callbacks:
        zone = _zone(request.timezone, cfg.default_timezone)
        starts, ends = _window(day, request.slot_start, request.slot_end, zone)
        entries.append(
            CallEntry(
                "callback",
                external_id,
                _name(first, last),
                request.phone,
                zone.key,
                f"{format_minute(request.slot_start)}-{format_minute(request.slot_end)}",
                starts,
                ends,
                request.topic_key or "",
                request.note or "",
            )
        )

    default_start, default_end = cfg.default_contact_hours
    calls = session.execute(
        sa.select(
            Customer.external_id,
            Customer.first_name,
            Customer.last_name,
            Customer.phone,
            Customer.timezone,
            ContactPreference.contact_start,
            ContactPreference.contact_end,
            Campaign.name,
            OutboxMessage.body_text,
            Delivery.sent_at,
        )
        .select_from(Delivery)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .join(Customer, Customer.id == Delivery.customer_id)
        .join(OutboxMessage, OutboxMessage.delivery_id == Delivery.id)
        .outerjoin(ContactPreference, ContactPreference.customer_id == Customer.id)
        .where(
            Delivery.channel == "phone",
            Delivery.status == "sent",
            Customer.erased_at.is_(None),
        )
        .order_by(Delivery.sent_at)
    ).all()
    for row in calls:
        zone = _zone(row.timezone, cfg.default_timezone)
        if row.sent_at.astimezone(zone).date() != day:
            continue
        start = default_start if row.contact_start is None else row.contact_start
        end = default_end if row.contact_end is None else row.contact_end
        if start == end:
            start, end = 0, 1440  # any time
        starts, ends = _window(day, start, end, zone)
        entries.append(
            CallEntry(
                "campaign",
                row.external_id,
                _name(row.first_name, row.last_name),
                row.phone,
                zone.key,
                f"{format_minute(start)}-{format_minute(end)}",
                starts,
                ends,
                row.name,
                row.body_text,
            )
        )
    return entries


@dataclasses.dataclass(frozen=True)
class Letter:
    external_id: str | None
    name: str
    line1: str | None
    line2: str | None
    postal_code: str | None
    city: str | None
    country: str | None
    text: str


def print_file(session: Session, campaign_id: uuid.UUID) -> list[Letter]:
    """Every letter of a campaign handed to the print file, with its postal address."""
    rows = session.execute(
        sa.select(
            Customer.external_id,
            Customer.first_name,
            Customer.last_name,
            Customer.postal_line1,
            Customer.postal_line2,
            Customer.postal_code,
            Customer.city,
            Customer.country,
            OutboxMessage.body_text,
        )
        .select_from(Delivery)
        .join(Customer, Customer.id == Delivery.customer_id)
        .join(OutboxMessage, OutboxMessage.delivery_id == Delivery.id)
        .where(
            Delivery.campaign_id == campaign_id,
            Delivery.channel == "post",
            Delivery.status == "sent",
            Customer.erased_at.is_(None),
        )
        .order_by(Customer.postal_code, Customer.last_name)
    ).all()
    return [
        Letter(
            r.external_id,
            _name(r.first_name, r.last_name),
            r.postal_line1,
            r.postal_line2,
            r.postal_code,
            r.city,
            r.country,
            r.body_text,
        )
        for r in rows
    ]


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def as_json(entries: list[Any]) -> str:
    rows = [{k: _plain(v) for k, v in dataclasses.asdict(e).items()} for e in entries]
    return json.dumps(rows, ensure_ascii=False, indent=2)


def as_csv(entries: list[Any], kind: type) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([f.name for f in dataclasses.fields(kind)])
    for entry in entries:
        writer.writerow([_plain(v) for v in dataclasses.astuple(entry)])
    return buffer.getvalue()
