from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base

# Arrays on PostgreSQL, the only backend that keeps this table (SQLite leaves it empty).
_INSTANTS = sa.JSON().with_variant(ARRAY(sa.DateTime(timezone=True)), "postgresql")
_TOPIC_INSTANTS = sa.JSON().with_variant(ARRAY(sa.Text()), "postgresql")


class PolicyState(Base):
    """What the set-based contact policy reads about one customer, in one narrow row.

    A copy of the customer's channel consents, contact preference and counted contacts
    (marketing, sent or reserved), so that planning a million customers reads one row
    each instead of joining five tables and aggregating the contact log. On PostgreSQL
    database triggers (migration 0005) keep it current in the transaction of every
    write to ``channel_consents``, ``contact_preferences`` and ``contact_log`` and of
    every change of a customer's address HMAC, whoever writes. SQLite (the embedded
    mode) does not keep it: its policy reads the tables themselves. The per-customer
    form always reads the tables themselves.
    """

    __tablename__ = "policy_state"
    # Room on each page for updated versions of its rows (HOT updates, index untouched).
    __table_args__ = {"postgresql_with": {"fillfactor": 70}}

    customer_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    # channel_consents, per channel: the status, and whether the confirmed address is the
    # customer's current one (its HMAC equals the customer's; NULL: no consent row).
    email_status: Mapped[str | None] = mapped_column(sa.String(16))
    email_confirmed: Mapped[bool | None]
    sms_status: Mapped[str | None] = mapped_column(sa.String(16))
    sms_confirmed: Mapped[bool | None]
    phone_status: Mapped[str | None] = mapped_column(sa.String(16))
    phone_confirmed: Mapped[bool | None]
    post_status: Mapped[str | None] = mapped_column(sa.String(16))
    post_confirmed: Mapped[bool | None]
    # contact_preferences (all NULL: no row, the defaults).
    frequency: Mapped[str | None] = mapped_column(sa.String(16))
    channel_order: Mapped[str | None] = mapped_column(sa.String(40))
    contact_start: Mapped[int | None] = mapped_column(sa.SmallInteger)
    contact_end: Mapped[int | None] = mapped_column(sa.SmallInteger)
    paused_until: Mapped[dt.datetime | None]
    # contact_log: the instants of the counted contacts, ascending (NULL: none), all of
    # them and per channel; and per topic as "<topic id> <UTC instant, microseconds>"
    # texts in "C" order (one sorted array, searched for one topic's span of instants).
    counted_at: Mapped[Any] = mapped_column(_INSTANTS, nullable=True)
    counted_topic_at: Mapped[Any] = mapped_column(_TOPIC_INSTANTS, nullable=True)
    counted_email_at: Mapped[Any] = mapped_column(_INSTANTS, nullable=True)
    counted_sms_at: Mapped[Any] = mapped_column(_INSTANTS, nullable=True)
    counted_phone_at: Mapped[Any] = mapped_column(_INSTANTS, nullable=True)
    counted_post_at: Mapped[Any] = mapped_column(_INSTANTS, nullable=True)
