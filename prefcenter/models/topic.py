from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, Timestamps, UUIDPrimaryKey, enum_column
from .vocabulary import FREQUENCIES, REGIMES, SUBSCRIPTION_STATUSES, TOPIC_KINDS

if TYPE_CHECKING:
    from .customer import Customer


class Topic(UUIDPrimaryKey, Timestamps, Base):
    """What a message is about: an offer category, a loyalty alert, a newsletter."""

    __tablename__ = "topics"

    key: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # {"fr": "...", "en": "..."}
    names: Mapped[dict[str, Any]] = mapped_column(default=dict)
    descriptions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    kind: Mapped[str] = mapped_column(enum_column(*TOPIC_KINDS, name="topic_kind"))
    regime: Mapped[str] = mapped_column(enum_column(*REGIMES, name="topic_regime"))
    active: Mapped[bool] = mapped_column(default=True)

    def name(self, locale: str) -> str:
        return self.names.get(locale) or self.names.get("fr") or self.key


class TopicSubscription(Timestamps, Base):
    """A customer's explicit choice about one topic, and their cadence for it."""

    __tablename__ = "topic_subscriptions"

    customer_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    topic_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("topics.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    status: Mapped[str] = mapped_column(
        enum_column(*SUBSCRIPTION_STATUSES, name="subscription_status")
    )
    # The customer's own cadence for this topic; None = only the overall cadence applies.
    frequency: Mapped[str | None] = mapped_column(enum_column(*FREQUENCIES, name="topic_frequency"))

    customer: Mapped[Customer] = relationship(back_populates="subscriptions")
    topic: Mapped[Topic] = relationship()
