"""Topics (what messages are about): listed and created or updated by key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..errors import InvalidField, InvalidInput
from ..models import Topic
from ..models.vocabulary import REGIMES, TOPIC_KINDS


def list_topics(session: Session) -> list[Topic]:
    return list(session.scalars(sa.select(Topic).order_by(Topic.key)))


def get_topic(session: Session, key: str) -> Topic | None:
    return session.scalar(sa.select(Topic).where(Topic.key == key))


def upsert_topic(session: Session, key: str, fields: Mapping[str, Any]) -> tuple[Topic, bool]:
    """Create or update the topic ``key``; returns (topic, created)."""
    errors = []
    if fields.get("kind") not in TOPIC_KINDS:
        errors.append(InvalidField("kind", fields.get("kind"), "is not a topic kind", "invalid"))
    if fields.get("regime") not in REGIMES:
        errors.append(InvalidField("regime", fields.get("regime"), "is not a regime", "invalid"))
    if not fields.get("names"):
        errors.append(InvalidField("names", fields.get("names"), "needs a name", "required"))
    if errors:
        raise InvalidInput(errors)
    topic = get_topic(session, key)
    created = topic is None
    if topic is None:
        topic = Topic(key=key)
        session.add(topic)
    topic.names = dict(fields["names"])
    topic.descriptions = dict(fields.get("descriptions") or {})
    topic.kind = fields["kind"]
    topic.regime = fields["regime"]
    topic.active = bool(fields.get("active", True))
    session.flush()
    return topic, created
