from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, Timestamps, UUIDPrimaryKey, enum_column
from .vocabulary import CHANNELS, CONSENT_STATUSES

if TYPE_CHECKING:
    from .customer import Customer


class ChannelConsent(UUIDPrimaryKey, Timestamps, Base):
    """Current consent of one customer for one channel (the ledger holds its history)."""

    __tablename__ = "channel_consents"
    __table_args__ = (sa.UniqueConstraint("customer_id", "channel"),)

    customer_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("customers.id", ondelete="CASCADE")
    )
    channel: Mapped[str] = mapped_column(enum_column(*CHANNELS, name="channel"))
    status: Mapped[str] = mapped_column(enum_column(*CONSENT_STATUSES, name="consent_status"))
    source: Mapped[str | None] = mapped_column(sa.String(100))
    # How the current status was obtained: portal_form, api_proof, double_opt_in, ...
    mechanism: Mapped[str | None] = mapped_column(sa.String(40))
    # SHA-256 of the exact notice text the customer was shown when granting.
    notice_hash: Mapped[str | None] = mapped_column(sa.String(64))
    # HMAC of the address the customer proved to own (double opt-in, or vouched
    # for by an API client with proof); it no longer matches once the address changes.
    confirmed_hmac: Mapped[str | None] = mapped_column(sa.String(64))
    granted_at: Mapped[dt.datetime | None]
    refused_at: Mapped[dt.datetime | None]
    # Double opt-in in progress: hash of the SMS code / email token nonce, expiry, tries.
    confirmation_hash: Mapped[str | None] = mapped_column(sa.String(128))
    confirmation_expires_at: Mapped[dt.datetime | None]
    confirmation_attempts: Mapped[int] = mapped_column(default=0, server_default="0")

    customer: Mapped[Customer] = relationship(back_populates="consents")
