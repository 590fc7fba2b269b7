from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, Timestamps, UUIDPrimaryKey, enum_column

CALLBACK_STATUSES = ("requested", "done", "cancelled")


class CallbackRequest(UUIDPrimaryKey, Timestamps, Base):
    """A customer asked to be called back on a day, within a slot (contact-center list)."""

    __tablename__ = "callback_requests"
    __table_args__ = (
        sa.Index("ix_callback_requests_day_status", "day", "status"),
        sa.CheckConstraint(
            "slot_start >= 0 AND slot_end <= 1440 AND slot_start < slot_end", name="slot_range"
        ),
    )

    customer_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    day: Mapped[dt.date] = mapped_column(sa.Date)
    # Minutes after midnight in the customer's timezone.
    slot_start: Mapped[int] = mapped_column(sa.SmallInteger)
    slot_end: Mapped[int] = mapped_column(sa.SmallInteger)
    timezone: Mapped[str] = mapped_column(sa.String(64))
    phone: Mapped[str | None] = mapped_column(sa.String(16))  # E.164, the number to call
    topic_key: Mapped[str | None] = mapped_column(sa.String(64))
    note: Mapped[str | None] = mapped_column(sa.String(500))
    status: Mapped[str] = mapped_column(
        enum_column(*CALLBACK_STATUSES, name="callback_status"), default="requested"
    )
