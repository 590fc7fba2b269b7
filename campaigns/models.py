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

from prefcenter.models.base import (
    Base,
    JSONDocument,
    Timestamps,
    UUIDPrimaryKey,
    enum_column,
    utcnow,
)
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
# deferred (with the reason), or skipped at send time (planning counts the customers it
# skips in campaign_exclusions instead); cancelled when the campaign is cancelled before the
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
        # Is anything of this campaign left to send (the scheduler, each minute)?
        sa.Index("ix_deliveries_campaign_status", "campaign_id", "status"),
        # The sweeper and the scheduler look for due deliveries by status and time.
        sa.Index("ix_deliveries_status_scheduled_at", "status", "scheduled_at"),
    )

    # A campaign id without a foreign key (migration 0008): its per-row check was 1.3 s
    # of a 400,000-delivery planning; deliveries are written by planning for its own
    # campaign, and campaigns are never deleted (they are cancelled).
    campaign_id: Mapped[uuid.UUID]
    # A customer id, without a foreign key: its per-row check cost more than half of
    # planning's insert (migration 0006). Deliveries are written for ids selected from
    # ``customers``, and customers are never deleted (erasure blanks the row).
    customer_id: Mapped[uuid.UUID]
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


class CampaignExclusion(Base):
    """How many candidates planning left out, per channel and policy reason.

    Planning writes a delivery only for the customers it contacts; the ones the policy
    skips are counted here (one row per reason, added to at each planning), so the
    marketer sees why people were excluded without a row per excluded customer. Why one
    given customer was left out is the policy's answer for them (``planner.decision_for``).
    """

    __tablename__ = "campaign_exclusions"

    campaign_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    # The customer's first-choice channel, whose reason is the one given.
    channel: Mapped[str] = mapped_column(
        enum_column(*CHANNELS, name="exclusion_channel"), primary_key=True
    )
    reason: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    customers: Mapped[int] = mapped_column(sa.BigInteger)


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
    # The delivery, if the event is about one of ours; no foreign key (migration 0009):
    # the webhook selects it from ``deliveries`` in the statement that inserts the event.
    delivery_id: Mapped[uuid.UUID | None]
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class DormancySnapshot(Base):
    """How many customers were dormant on a day (the back office's dormancy rate over time)."""

    __tablename__ = "dormancy_snapshots"

    day: Mapped[dt.date] = mapped_column(sa.Date, primary_key=True)
    dormancy_days: Mapped[int]
    customers: Mapped[int]
    dormant: Mapped[int]
    computed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ReengagementProgram(UUIDPrimaryKey, Timestamps, Base):
    """A gentle sequence of nudges for customers who went quiet (default: day 0, +14, +30).

    Each step is a campaign of its own (``step_campaigns``, in order), planned and sent by
    the normal engine under the contact policy, so every nudge counts toward the caps.
    """

    __tablename__ = "reengagement_programs"

    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    topic_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("topics.id"))
    channels: Mapped[list[str]]
    # [{"day": 0, "content": {...}}, {"day": 14, ...}, ...]: days after enrolment.
    steps: Mapped[list[Any]] = mapped_column(JSONDocument)
    step_campaigns: Mapped[list[str]]
    # Days after the last step without a response before the customer is sunset.
    sunset_after_days: Mapped[int] = mapped_column(default=14)
    active: Mapped[bool] = mapped_column(default=True)


ENROLMENT_STATUSES = ("active", "reengaged", "sunset", "stopped")


class ReengagementEnrolment(UUIDPrimaryKey, Base):
    """One dormant customer in one program: which step they got, and how it ended."""

    __tablename__ = "reengagement_enrolments"
    __table_args__ = (
        sa.UniqueConstraint("program_id", "customer_id"),
        sa.Index("ix_reengagement_enrolments_due", "program_id", "status", "enrolled_at"),
    )

    program_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("reengagement_programs.id", ondelete="CASCADE")
    )
    customer_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("customers.id", ondelete="CASCADE")
    )
    enrolled_at: Mapped[dt.datetime]
    # The last step planned (-1: none yet); step k is due ``steps[k].day`` after enrolment.
    step: Mapped[int] = mapped_column(default=-1)
    status: Mapped[str] = mapped_column(
        enum_column(*ENROLMENT_STATUSES, name="enrolment_status"), default="active"
    )
    reengaged_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
