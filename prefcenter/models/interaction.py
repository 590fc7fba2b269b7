from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, UUIDPrimaryKey, utcnow


class Interaction(UUIDPrimaryKey, Base):
    """Something a customer did: a purchase, loyalty activity, visit, open, click, call."""

    __tablename__ = "interactions"
    __table_args__ = (
        sa.UniqueConstraint("source", "idempotency_key"),
        sa.Index("ix_interactions_customer_occurred", "customer_id", "occurred_at"),
    )

    customer_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("customers.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(sa.String(40))
    occurred_at: Mapped[dt.datetime]
    source: Mapped[str] = mapped_column(sa.String(100))
    idempotency_key: Mapped[str] = mapped_column(sa.String(200))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
