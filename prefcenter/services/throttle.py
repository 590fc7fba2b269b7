"""Rate limits shared by every web process: hits counted per bucket in fixed windows.

A bucket names what is limited ("magic-link:ip:203.0.113.9"). Never put an address in a
bucket name: callers pass an HMAC of it (see :func:`bucket`).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..models import ThrottleWindow, utcnow

MAX_BUCKET_LENGTH = 200


def window_start(now: dt.datetime, window: dt.timedelta) -> dt.datetime:
    """The start of the fixed window ``now`` falls in (windows are aligned on the epoch)."""
    seconds = int(window.total_seconds())
    if seconds <= 0:
        raise ValueError(f"window {window!r} must be positive")
    epoch = int(now.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % seconds, tz=dt.UTC)


def hit(
    session: Session,
    bucket: str,
    *,
    limit: int,
    window: dt.timedelta,
    now: dt.datetime | None = None,
) -> bool:
    """Count one hit; True while the bucket has had at most ``limit`` hits in this window.

    One atomic INSERT ... ON CONFLICT DO UPDATE ... RETURNING, so concurrent requests in
    other processes are counted exactly.
    """
    if len(bucket) > MAX_BUCKET_LENGTH:
        raise ValueError(f"bucket name longer than {MAX_BUCKET_LENGTH} characters")
    now = now or utcnow()
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    # An ORM-enabled INSERT (on the entity, not its Table): zope.sqlalchemy then sees a
    # write and commits it; a Core statement on the Table would be silently rolled back.
    statement = (
        insert(ThrottleWindow)
        .values(bucket=bucket, window_start=window_start(now, window), hits=1)
        .on_conflict_do_update(
            index_elements=[ThrottleWindow.bucket, ThrottleWindow.window_start],
            set_={"hits": ThrottleWindow.hits + 1},
        )
        .returning(ThrottleWindow.hits)
    )
    hits = session.execute(statement).scalar_one()
    return int(hits) <= limit


def prune(session: Session, *, older_than: dt.datetime) -> int:
    """Forget windows that started before ``older_than``; the number removed."""
    result = session.execute(
        sa.delete(ThrottleWindow).where(ThrottleWindow.window_start < older_than)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
