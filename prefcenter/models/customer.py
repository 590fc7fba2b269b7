from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, Timestamps, UUIDPrimaryKey

if TYPE_CHECKING:
    from .consent import ChannelConsent
    from .preference import ContactPreference
    from .topic import TopicSubscription


class Customer(UUIDPrimaryKey, Timestamps, Base):
    """A person the brand may contact. ``external_id`` is the loyalty member id."""

    __tablename__ = "customers"

    external_id: Mapped[str | None] = mapped_column(sa.String(128), unique=True)
    email: Mapped[str | None] = mapped_column(sa.String(320), index=True)
    phone: Mapped[str | None] = mapped_column(sa.String(16))  # E.164
    # Keyed HMACs of the normalized addresses (prefcenter.addresses), kept by the
    # services whenever an address changes: suppressions are matched on them in SQL.
    email_hmac: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    phone_hmac: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    postal_hmac: Mapped[str | None] = mapped_column(sa.String(64))
    first_name: Mapped[str | None] = mapped_column(sa.String(100))
    last_name: Mapped[str | None] = mapped_column(sa.String(100))
    postal_line1: Mapped[str | None] = mapped_column(sa.String(200))
    postal_line2: Mapped[str | None] = mapped_column(sa.String(200))
    postal_code: Mapped[str | None] = mapped_column(sa.String(20))
    city: Mapped[str | None] = mapped_column(sa.String(100))
    country: Mapped[str | None] = mapped_column(sa.String(2))  # ISO 3166-1 alpha-2
    locale: Mapped[str] = mapped_column(sa.String(5), default="fr")
    timezone: Mapped[str] = mapped_column(sa.String(64), default="Europe/Paris")
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_interaction_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    erased_at: Mapped[dt.datetime | None]

    consents: Mapped[list[ChannelConsent]] = relationship(
        back_populates="customer", cascade="all, delete-orphan"
    )
    subscriptions: Mapped[list[TopicSubscription]] = relationship(
        back_populates="customer", cascade="all, delete-orphan"
    )
    preference: Mapped[ContactPreference | None] = relationship(
        back_populates="customer", cascade="all, delete-orphan"
    )

    @property
    def has_postal_address(self) -> bool:
        return bool(self.postal_line1 and self.postal_code and self.city)

    def __repr__(self) -> str:
        return f"<Customer {self.external_id or self.id}>"


def new_customer_id() -> uuid.UUID:
    return uuid.uuid4()
