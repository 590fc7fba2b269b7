from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, Timestamps, UUIDPrimaryKey, enum_column, utcnow
from .vocabulary import CHANNELS, TOPIC_KINDS

CONTACT_STATUSES = ("reserved", "sent", "released")


class ContactLogEntry(UUIDPrimaryKey, Timestamps, Base):
    """One message to one customer, reserved or sent: what frequency caps count.

    A campaign reserves its contacts when it plans them (status ``reserved`` at the
    planned time) so that two campaigns planned at once cannot together exceed a cap;
    a reservation becomes ``sent``, or ``released`` when the message is not sent.
    """

    __tablename__ = "contact_log"
    __table_args__ = (
        # One contact per customer per message (a campaign, a program step, an alert);
        # also the index of every read by customer (migration 0011).
        sa.UniqueConstraint("customer_id", "message_ref"),
    )

    # A customer id, without a foreign key: its per-row check cost more than half of a
    # campaign's reservations (migration 0006). Customers are never deleted (erasure
    # blanks the row); reservations are written for ids selected from ``customers``.
    customer_id: Mapped[uuid.UUID]
    channel: Mapped[str] = mapped_column(enum_column(*CHANNELS, name="contact_channel"))
    # A topic id, without a foreign key either (migration 0007): topics are never deleted
    # (they are deactivated), and the per-row check cost a second of a large planning.
    topic_id: Mapped[uuid.UUID | None]
    kind: Mapped[str] = mapped_column(enum_column(*TOPIC_KINDS, name="contact_kind"))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(
        enum_column(*CONTACT_STATUSES, name="contact_status"), default="reserved"
    )
    # The message this contact belongs to ("campaign:<uuid>", "alert:<uuid>").
    message_ref: Mapped[str] = mapped_column(sa.String(100))


class PressureRule(UUIDPrimaryKey, Timestamps, Base):
    """The global marketing pressure policy, editable at run time.

    At most ``max_messages`` marketing messages per customer per rolling
    ``period_days``, on one channel or (channel NULL) across all channels.
    """

    __tablename__ = "pressure_rules"
    __table_args__ = (
        sa.UniqueConstraint("channel", "period_days"),
        sa.CheckConstraint("period_days >= 1 AND period_days <= 90", name="period_days_range"),
        sa.CheckConstraint("max_messages >= 0", name="max_messages_positive"),
    )

    channel: Mapped[str | None] = mapped_column(enum_column(*CHANNELS, name="pressure_channel"))
    period_days: Mapped[int] = mapped_column(sa.SmallInteger)
    max_messages: Mapped[int] = mapped_column(sa.SmallInteger)
    active: Mapped[bool] = mapped_column(default=True)
