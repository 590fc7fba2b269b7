"""The campaign engine's data: campaigns and their deliveries (the outbox).

A delivery is one campaign to one customer. It exists as a row before any broker
message is sent; broker messages carry only delivery ids, and every status change
is a compare-and-set in the database, so losing the broker or running an actor
twice never loses or doubles a message.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from prefcenter.models.base import Base, Timestamps, UUIDPrimaryKey, enum_column, utcnow
from prefcenter.models.vocabulary import CHANNELS, TOPIC_KINDS

CAMPAIGN_STATUSES = (
    "draft",
    "scheduled",
    "running",
    "paused",
    "completed",
    "cancelled",
)
# planned -> queued -> (sending) -> sent -> delivered -> opened -> clicked, or failed; or
# skipped / deferred (with the reason); cancelled when the campaign is cancelled before the
# message went out. ``sending`` is committed before a provider call, so a worker killed
# during the call leaves it visible instead of sending it again. Provider events only
# move a delivery forward (a late "delivered" never undoes "opened").
DELIVERY_STATUSES = (
    "planned",
    "deferred",
    "queued",
    "sending",
    "sent",
    "delivered",
    "opened",
    "clicked",
    "failed",
    "skipped",
    "cancelled",
)


class Campaign(UUIDPrimaryKey, Timestamps, Base):
    """A message about one topic, to a segment, on the channels the marketer allows."""

    __tablename__ = "campaigns"
    __table_args__ = (
        sa.CheckConstraint(
            "throttle_per_minute IS NULL OR throttle_per_minute > 0", name="throttle_positive"
        ),
    )

    name: Mapped[str] = mapped_column(sa.String(200))
    topic_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("topics.id"))
    kind: Mapped[str] = mapped_column(enum_column(*TOPIC_KINDS, name="campaign_kind"))
    channels: Mapped[list[str]]
    segment: Mapped[dict[str, Any]]
    # {"email": {"fr": {"subject", "html", "text"}, ...}, "sms": {"fr": {"text"}}, ...}
    content: Mapped[dict[str, Any]]
    schedule_at: Mapped[dt.datetime | None]
    throttle_per_minute: Mapped[int | None]
    status: Mapped[str] = mapped_column(
        enum_column(*CAMPAIGN_STATUSES, name="campaign_status"), default="draft"
    )
    # What planning found: {"skipped": {"<reason>": n}, "channels": {"email": n, ...}}.
    plan_counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    planned_at: Mapped[dt.datetime | None]
    completed_at: Mapped[dt.datetime | None]
    created_by: Mapped[str | None] = mapped_column(sa.String(200))

    @property
    def message_ref(self) -> str:
        """How this campaign's reservations are named in the contact log."""
        return f"campaign:{self.id}"


class Delivery(UUIDPrimaryKey, Timestamps, Base):
    """One campaign to one customer: the outbox row that dispatch sends exactly once."""

    __tablename__ = "deliveries"
    __table_args__ = (
        sa.UniqueConstraint("campaign_id", "customer_id"),
        sa.Index("ix_deliveries_campaign_status", "campaign_id", "status"),
        # The sweeper and the scheduler look for due deliveries by status and time.
        sa.Index("ix_deliveries_status_scheduled_at", "status", "scheduled_at"),
    )

    campaign_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("campaigns.id", ondelete="CASCADE")
    )
    customer_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("customers.id", ondelete="CASCADE")
    )
    channel: Mapped[str] = mapped_column(enum_column(*CHANNELS, name="delivery_channel"))
    status: Mapped[str] = mapped_column(
        enum_column(*DELIVERY_STATUSES, name="delivery_status"), default="planned"
    )
    # The policy's reason for skipped / deferred (and for a send-time skip).
    reason: Mapped[str | None] = mapped_column(sa.String(32))
    # When the message may go: the planning time, or the customer's next window opening.
    scheduled_at: Mapped[dt.datetime | None]
    provider_message_id: Mapped[str | None] = mapped_column(sa.String(200))
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    queued_at: Mapped[dt.datetime | None]
    sent_at: Mapped[dt.datetime | None]
    # What the provider's events said, first time each (opens by a mail client's privacy
    # prefetching are kept apart: they are not the customer's engagement).
    delivered_at: Mapped[dt.datetime | None]
    opened_at: Mapped[dt.datetime | None]
    machine_opened_at: Mapped[dt.datetime | None]
    clicked_at: Mapped[dt.datetime | None]


class OutboxMessage(UUIDPrimaryKey, Base):
    """A rendered message kept in the database instead of being sent (embedded mode)."""

    __tablename__ = "outbox_messages"
    __table_args__ = (sa.Index("ix_outbox_messages_created_at", "created_at"),)

    delivery_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("deliveries.id", ondelete="CASCADE"), unique=True
    )
    channel: Mapped[str] = mapped_column(enum_column(*CHANNELS, name="outbox_channel"))
    to_address: Mapped[str] = mapped_column(sa.String(320))
    subject: Mapped[str | None] = mapped_column(sa.String(500))
    body_text: Mapped[str] = mapped_column(sa.Text)
    body_html: Mapped[str | None] = mapped_column(sa.Text)
    headers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ProviderEvent(Base):
    """A provider event already processed (SendGrid retries for 24 h; repeats are normal)."""

    __tablename__ = "provider_events"
    __table_args__ = (sa.Index("ix_provider_events_received_at", "received_at"),)

    event_id: Mapped[str] = mapped_column(sa.String(100), primary_key=True)  # sg_event_id
    event: Mapped[str] = mapped_column(sa.String(32))
    delivery_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("deliveries.id", ondelete="SET NULL")
    )
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
