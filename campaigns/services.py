"""Campaigns: create (validated), launch, pause, resume, cancel.

Every function takes a session and plain values; nothing here sees a request. A
rejected input raises :class:`prefcenter.errors.InvalidInput` naming each bad field
(as a JSON pointer), its value and why, before anything is written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

import jinja2
import sqlalchemy as sa
from sqlalchemy.orm import Session

from prefcenter.consent_settings import ConsentSettings
from prefcenter.errors import InvalidField, InvalidInput, NotFound
from prefcenter.i18n import LOCALES
from prefcenter.models import ContactLogEntry, Topic, utcnow
from prefcenter.models.vocabulary import CHANNELS, TOPIC_KINDS

from . import planner, rendering, segments
from .models import Campaign, Delivery

FIELDS = {
    "name",
    "topic",
    "kind",
    "channels",
    "segment",
    "content",
    "schedule",
    "throttle_per_minute",
}
REQUIRED_PARTS = {"email": ("subject",), "sms": ("text",), "phone": ("script",), "post": ("text",)}


class WrongState(Exception):
    """The campaign's status does not allow this action (e.g. launching a cancelled one)."""

    def __init__(self, campaign: Campaign, action: str, allowed: tuple[str, ...]) -> None:
        self.status, self.action, self.allowed = campaign.status, action, allowed
        super().__init__(
            f"cannot {action} a campaign that is {campaign.status} "
            f"(only one that is {' or '.join(allowed)})"
        )


@dataclasses.dataclass(frozen=True)
class Settings:
    """What launching needs: the consent settings and the dormancy threshold of segments."""

    cfg: ConsentSettings
    dormancy_days: int = segments.DEFAULT_DORMANCY_DAYS


def _check_content(content: Any, channels: list[str], errors: list[InvalidField]) -> dict[str, Any]:
    if not isinstance(content, dict):
        errors.append(InvalidField("/content", content, "must be an object per channel"))
        return {}
    for channel in content:
        if channel not in CHANNELS:
            errors.append(
                InvalidField(f"/content/{channel}", channel, f"is not one of {', '.join(CHANNELS)}")
            )
    for channel in channels:
        variants = content.get(channel)
        where = f"/content/{channel}"
        if not isinstance(variants, dict) or not variants:
            errors.append(
                InvalidField(where, variants, "is missing: every allowed channel needs content")
            )
            continue
        for locale, parts in variants.items():
            at = f"{where}/{locale}"
            if locale not in LOCALES:
                errors.append(InvalidField(at, locale, f"is not one of {', '.join(LOCALES)}"))
                continue
            if not isinstance(parts, dict):
                errors.append(InvalidField(at, parts, "must be an object"))
                continue
            known = rendering.PARTS[channel]
            for part, source in parts.items():
                if part not in known:
                    errors.append(
                        InvalidField(f"{at}/{part}", part, f"is not one of {', '.join(known)}")
                    )
                elif not isinstance(source, str):
                    errors.append(InvalidField(f"{at}/{part}", source, "must be a string"))
                else:
                    try:
                        rendering.compile_template(source, html=part == "html")
                    except jinja2.TemplateSyntaxError as exc:
                        errors.append(
                            InvalidField(
                                f"{at}/{part}", source, f"is not a valid template: {exc.message}"
                            )
                        )
            for part in REQUIRED_PARTS[channel]:
                if not parts.get(part):
                    errors.append(InvalidField(f"{at}/{part}", None, "is required"))
            if channel == "email" and not (parts.get("text") or parts.get("html")):
                errors.append(InvalidField(f"{at}/text", None, "an email needs text or html"))
    return content


def _parse_schedule(value: Any, errors: list[InvalidField]) -> dt.datetime | None:
    if value is None:
        return None
    at = value.get("at") if isinstance(value, dict) else None
    if not isinstance(value, dict) or set(value) != {"at"} or not isinstance(at, str):
        errors.append(InvalidField("/schedule", value, 'must be null or {"at": <ISO 8601 time>}'))
        return None
    try:
        parsed = dt.datetime.fromisoformat(at)
    except ValueError:
        errors.append(InvalidField("/schedule/at", at, "is not an ISO 8601 time"))
        return None
    if parsed.tzinfo is None:
        errors.append(InvalidField("/schedule/at", at, "needs a time zone (e.g. +01:00 or Z)"))
        return None
    return parsed.astimezone(dt.UTC)


def check_name(name: Any) -> list[InvalidField]:
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        return [InvalidField("/name", name, "must be a text of 1 to 200 characters")]
    return []


def check_channels(channels: Any) -> list[InvalidField]:
    """A campaign's (or a program's) channels: some of the four, each once."""
    if (
        not isinstance(channels, list)
        or not channels
        or any(c not in CHANNELS for c in channels)
        or len(set(channels)) != len(channels)
    ):
        reason = f"must list some of {', '.join(CHANNELS)}, each once"
        return [InvalidField("/channels", channels, reason)]
    return []


def create_campaign(
    session: Session, data: Mapping[str, Any], *, created_by: str | None = None
) -> Campaign:
    """A new ``draft`` campaign from the API/CLI shape; every problem reported at once."""
    errors: list[InvalidField] = []
    if not isinstance(data, Mapping):
        raise InvalidInput.one("", data, "must be a JSON object")
    for key in sorted(set(data) - FIELDS):
        errors.append(InvalidField(f"/{key}", data[key], "is not a campaign field"))

    name = data.get("name")
    errors += check_name(name)

    topic = None
    key = data.get("topic")
    if not isinstance(key, str):
        errors.append(InvalidField("/topic", key, "must be a topic key"))
    else:
        topic = session.scalar(sa.select(Topic).where(Topic.key == key))
        if topic is None or not topic.active:
            errors.append(InvalidField("/topic", key, "is not an active topic"))

    kind = data.get("kind", topic.kind if topic else "marketing")
    if kind not in TOPIC_KINDS:
        errors.append(InvalidField("/kind", kind, f"is not one of {', '.join(TOPIC_KINDS)}"))
    elif topic is not None and kind == "alert" and topic.kind != "alert":
        errors.append(
            InvalidField("/kind", kind, f"topic {topic.key!r} is a marketing topic, not an alert")
        )

    channels = data.get("channels")
    channel_errors = check_channels(channels)
    errors += channel_errors
    if channel_errors:
        channels = []

    segment = data.get("segment", {"all": []})
    try:
        segments.validate(segment, session=session)
    except segments.SegmentError as exc:
        for problem in exc.errors:
            errors.append(
                InvalidField(
                    f"/segment{problem.field}", problem.value, problem.reason, problem.code
                )
            )

    content = _check_content(data.get("content"), channels, errors)
    schedule_at = _parse_schedule(data.get("schedule"), errors)

    throttle = data.get("throttle_per_minute")
    if throttle is not None and (
        not isinstance(throttle, int) or isinstance(throttle, bool) or throttle < 1
    ):
        errors.append(
            InvalidField("/throttle_per_minute", throttle, "must be null or a whole number ≥ 1")
        )

    if errors:
        raise InvalidInput(errors)
    assert topic is not None
    campaign = Campaign(
        name=name.strip(),
        topic_id=topic.id,
        kind=kind,
        channels=list(channels),
        segment=segment,
        content=content,
        schedule_at=schedule_at,
        throttle_per_minute=throttle,
        status="draft",
        created_by=created_by,
    )
    session.add(campaign)
    session.flush()
    return campaign


def get_campaign(session: Session, campaign_id: uuid.UUID | str) -> Campaign:
    try:
        key = campaign_id if isinstance(campaign_id, uuid.UUID) else uuid.UUID(str(campaign_id))
    except ValueError:
        raise NotFound(f"no campaign {campaign_id!r}") from None
    campaign = session.get(Campaign, key)
    if campaign is None:
        raise NotFound(f"no campaign {campaign_id!r}")
    return campaign


def _require(campaign: Campaign, action: str, *allowed: str) -> None:
    if campaign.status not in allowed:
        raise WrongState(campaign, action, allowed)


def audience_of(session: Session, campaign: Campaign, at: dt.datetime, settings: Settings):
    return segments.compile_rule(
        session, campaign.segment, at=at, dormancy_days=settings.dormancy_days
    )


def forecast(
    session: Session, campaign: Campaign, at: dt.datetime, settings: Settings
) -> planner.PlanCounts:
    """A dry run of planning: exactly what launching now would give; reserves nothing."""
    candidates = audience_of(session, campaign, at, settings)
    return planner.forecast(session, campaign, candidates, at, cfg=settings.cfg)


def launch(session: Session, campaign: Campaign, at: dt.datetime, settings: Settings) -> Campaign:
    """Plan now (``running``), or wait for the schedule (``scheduled``; the scheduler plans)."""
    _require(campaign, "launch", "draft", "scheduled")
    if campaign.schedule_at is not None and campaign.schedule_at > at:
        campaign.status = "scheduled"
        return campaign
    planner.plan(
        session, campaign, audience_of(session, campaign, at, settings), at, cfg=settings.cfg
    )
    campaign.status = "running"
    return campaign


def start_scheduled(session: Session, at: dt.datetime, settings: Settings) -> list[Campaign]:
    """Launch every scheduled campaign whose time has come (the scheduler calls this)."""
    due = session.scalars(
        sa.select(Campaign)
        .where(Campaign.status == "scheduled", Campaign.schedule_at <= at)
        .order_by(Campaign.schedule_at)
        .with_for_update(skip_locked=True)
    ).all()
    for campaign in due:
        launch(session, campaign, at, settings)
    return list(due)


def pause(session: Session, campaign: Campaign) -> Campaign:
    _require(campaign, "pause", "running")
    campaign.status = "paused"
    return campaign


def resume(session: Session, campaign: Campaign) -> Campaign:
    _require(campaign, "resume", "paused")
    campaign.status = "running"
    return campaign


def cancel(session: Session, campaign: Campaign, at: dt.datetime) -> Campaign:
    """Stop for good: unsent deliveries are cancelled and their reservations freed."""
    _require(campaign, "cancel", "draft", "scheduled", "running", "paused")
    waiting = ("planned", "deferred", "queued")
    session.execute(
        sa.update(ContactLogEntry)
        .where(
            ContactLogEntry.message_ref == campaign.message_ref,
            ContactLogEntry.status == "reserved",
            ContactLogEntry.customer_id.in_(
                sa.select(Delivery.customer_id).where(
                    Delivery.campaign_id == campaign.id, Delivery.status.in_(waiting)
                )
            ),
        )
        .values(status="released", updated_at=at)
    )
    session.execute(
        sa.update(Delivery)
        .where(Delivery.campaign_id == campaign.id, Delivery.status.in_(waiting))
        .values(status="cancelled", updated_at=at)
    )
    campaign.status = "cancelled"
    campaign.completed_at = at
    return campaign


def complete_finished(session: Session, at: dt.datetime) -> int:
    """Mark running campaigns with nothing left to send ``completed``."""
    left = sa.select(Delivery.id).where(
        Delivery.campaign_id == Campaign.id,
        Delivery.status.in_(("planned", "deferred", "queued")),
    )
    result = session.execute(
        sa.update(Campaign)
        .where(Campaign.status == "running", ~sa.exists(left))
        .values(status="completed", completed_at=at, updated_at=utcnow())
    )
    return result.rowcount
