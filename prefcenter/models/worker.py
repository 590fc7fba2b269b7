from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class WorkerPing(Base):
    """The last ping a worker process consumed from the broker (``prefcenter ping-worker``).

    Proves end to end that a worker takes messages from the configured broker and
    can write to the database.
    """

    __tablename__ = "worker_pings"

    nonce: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    worker: Mapped[str] = mapped_column(sa.String(200))  # hostname:pid
    sent_at: Mapped[dt.datetime]
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
