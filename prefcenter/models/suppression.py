from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, UUIDPrimaryKey, enum_column, utcnow
from .vocabulary import CHANNELS, SUPPRESSION_REASONS


class Suppression(UUIDPrimaryKey, Base):
    """An address that must not be contacted, kept as a keyed HMAC of its normal form.

    Storing the HMAC (not the address) lets us recognise an erased customer's
    address without keeping it.
    """

    __tablename__ = "suppressions"
    __table_args__ = (sa.UniqueConstraint("channel", "address_hmac", "reason"),)

    channel: Mapped[str] = mapped_column(enum_column(*CHANNELS, name="suppression_channel"))
    address_hmac: Mapped[str] = mapped_column(sa.String(64))
    reason: Mapped[str] = mapped_column(
        enum_column(*SUPPRESSION_REASONS, name="suppression_reason")
    )
    note: Mapped[str | None] = mapped_column(sa.String(500))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


sa.Index("ix_suppressions_lookup", Suppression.channel, Suppression.address_hmac)
