"""The global marketing pressure policy, editable at run time by marketers and the API."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..errors import InvalidField, InvalidInput
from ..models import PressureRule
from ..models.vocabulary import CHANNELS

MAX_PERIOD_DAYS = 90
MAX_MESSAGES = 1000


@dataclasses.dataclass(frozen=True)
class Rule:
    """At most ``max_messages`` marketing messages per ``period_days`` (on ``channel``)."""

    channel: str | None
    period_days: int
    max_messages: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def current_rules(session: Session) -> list[Rule]:
    rows = session.scalars(
        sa.select(PressureRule)
        .where(PressureRule.active.is_(True))
        .order_by(PressureRule.period_days, PressureRule.channel.is_not(None), PressureRule.channel)
    )
    return [Rule(r.channel, r.period_days, r.max_messages) for r in rows]


def _validate(rules: Sequence[Any]) -> list[Rule]:
    errors: list[InvalidField] = []
    parsed: list[Rule] = []
    seen: set[tuple[str | None, int]] = set()
    for i, raw in enumerate(rules):
        where = f"rules/{i}"
        if not isinstance(raw, dict):
            errors.append(InvalidField(where, raw, "must be an object", "invalid"))
            continue
        unknown = sorted(set(raw) - {"channel", "period_days", "max_messages"})
        if unknown:
            errors.append(
                InvalidField(
                    f"{where}/{unknown[0]}",
                    raw[unknown[0]],
                    "is not a known field",
                    "unknown_field",
                )
            )
        channel = raw.get("channel")
        if channel is not None and channel not in CHANNELS:
            errors.append(
                InvalidField(
                    f"{where}/channel",
                    channel,
                    f"is not a channel (one of {', '.join(CHANNELS)}, or null for all)",
                    "unknown_channel",
                )
            )
        days = raw.get("period_days")
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_PERIOD_DAYS:
            errors.append(
                InvalidField(
                    f"{where}/period_days",
                    days,
                    f"must be a whole number of days from 1 to {MAX_PERIOD_DAYS}",
                    "out_of_range",
                )
            )
        limit = raw.get("max_messages")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_MESSAGES:
            errors.append(
                InvalidField(
                    f"{where}/max_messages",
                    limit,
                    f"must be a whole number from 0 to {MAX_MESSAGES}",
                    "out_of_range",
                )
            )
        key = (channel, days)
        if key in seen:
            errors.append(
                InvalidField(
                    where, raw, "repeats the channel and period of an earlier rule", "duplicate"
                )
            )
        seen.add(key)
        if not errors:
            parsed.append(Rule(channel, days, limit))
    if errors:
        raise InvalidInput(errors)
    return parsed


def replace_rules(session: Session, rules: Sequence[Any]) -> list[Rule]:
    """Replace the whole pressure policy; invalid input changes nothing."""
    wanted = _validate(rules)
    session.execute(sa.delete(PressureRule))
    session.add_all(
        PressureRule(channel=r.channel, period_days=r.period_days, max_messages=r.max_messages)
        for r in wanted
    )
    session.flush()
    return current_rules(session)
