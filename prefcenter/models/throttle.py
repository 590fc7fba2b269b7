from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base


class ThrottleWindow(Base):
    """Hits counted per bucket (e.g. "magic-link:ip:203.0.113.9") in a fixed time window.

    Kept in the database so every web process shares the same limits.
    """

    __tablename__ = "throttle_windows"

    bucket: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    window_start: Mapped[dt.datetime] = mapped_column(primary_key=True)
    hits: Mapped[int] = mapped_column(default=0)


sa.Index("ix_throttle_windows_window_start", ThrottleWindow.window_start)
