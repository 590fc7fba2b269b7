from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, Timestamps, UUIDPrimaryKey, enum_column, utcnow

WEBHOOK_EVENTS = ("preference.changed", "customer.unsubscribed", "customer.erased")
WEBHOOK_DELIVERY_STATUSES = ("pending", "sent", "failed")


class WebhookEndpoint(UUIDPrimaryKey, Timestamps, Base):
    """A URL an API client registered to hear about preference changes.

    The signing secret is not stored: it is derived from the server secret and the
    endpoint id, and shown to the client once at registration.
    """

    __tablename__ = "webhook_endpoints"

    api_key_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("api_keys.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(sa.String(2000))
    events: Mapped[list[str]] = mapped_column(default=list)
    active: Mapped[bool] = mapped_column(default=True)


class WebhookDelivery(UUIDPrimaryKey, Base):
    """One event to one endpoint: the outbox row the webhook actor sends and retries."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # One delivery per endpoint per event: a change is never announced twice.
        sa.UniqueConstraint("endpoint_id", "event_id"),
        sa.Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
    )

    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    event_id: Mapped[str] = mapped_column(sa.String(100))
    event: Mapped[str] = mapped_column(sa.String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(
        enum_column(*WEBHOOK_DELIVERY_STATUSES, name="webhook_delivery_status"), default="pending"
    )
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(sa.String(500))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None]
