from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, Timestamps, enum_column
from .vocabulary import FREQUENCIES

if TYPE_CHECKING:
    from .customer import Customer


class ContactPreference(Timestamps, Base):
    """How often, in what channel order and at what hours a customer may be contacted.

    Contact hours are minutes after local midnight (in the customer's timezone);
    ``contact_start > contact_end`` is a window crossing midnight (22:00-08:00).
    NULL hours mean the default window from settings.
    """

    __tablename__ = "contact_preferences"
    __table_args__ = (
        sa.CheckConstraint(
            "contact_start IS NULL OR (contact_start >= 0 AND contact_start < 1440)",
            name="contact_start_range",
        ),
        sa.CheckConstraint(
            "contact_end IS NULL OR (contact_end >= 0 AND contact_end <= 1440)",
            name="contact_end_range",
        ),
    )

    customer_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    frequency: Mapped[str] = mapped_column(
        enum_column(*FREQUENCIES, name="frequency"), default="any"
    )
    # Comma-separated channels, most preferred first ("sms,email"); empty = default order.
    channel_order: Mapped[str] = mapped_column(sa.String(40), default="")
    contact_start: Mapped[int | None] = mapped_column(sa.SmallInteger)
    contact_end: Mapped[int | None] = mapped_column(sa.SmallInteger)
    paused_until: Mapped[dt.datetime | None]

    customer: Mapped[Customer] = relationship(back_populates="preference")

    @property
    def channels(self) -> list[str]:
        return [c for c in self.channel_order.split(",") if c]
