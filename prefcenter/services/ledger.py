"""The consent ledger: who changed which consent or preference, from what to what, and when.

Append-only (the model refuses updates and deletes); it is the proof of consent
(GDPR Art. 7(1)). Only prefcenter.services.preferences writes it for customer changes,
in the same transaction as the change itself: one change at a time with :func:`record`,
or a batch of changes in one statement with :func:`record_many`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..models import ConsentLedgerEntry, utcnow
from ..models.vocabulary import ACTOR_TYPES
from . import webhooks

LedgerValue = str | int | bool | dt.datetime | None


@dataclasses.dataclass(frozen=True)
class Actor:
    """Who made a change: ``type`` is customer, api_key, marketer, provider or system."""

    type: str
    id: str | None = None
    ip: str | None = None
    user_agent: str | None = None

    def __post_init__(self) -> None:
        # Fail where the actor is made, not at flush time on the ledger's CHECK constraint.
        if self.type not in ACTOR_TYPES:
            raise ValueError(f"actor type {self.type!r} is not one of {', '.join(ACTOR_TYPES)}")

    @classmethod
    def customer(
        cls, customer_id: uuid.UUID | str, ip: str | None = None, user_agent: str | None = None
    ) -> Actor:
        return cls("customer", str(customer_id), ip, user_agent)

    @classmethod
    def api_key(cls, prefix: str, ip: str | None = None, user_agent: str | None = None) -> Actor:
        return cls("api_key", prefix, ip, user_agent)

    @classmethod
    def marketer(
        cls, user_id: uuid.UUID | str, ip: str | None = None, user_agent: str | None = None
    ) -> Actor:
        return cls("marketer", str(user_id), ip, user_agent)

    @classmethod
    def provider(cls, name: str) -> Actor:
        """An email/SMS provider reporting a bounce or complaint (e.g. ``sendgrid``)."""
        return cls("provider", name)

    @classmethod
    def system(cls, name: str) -> Actor:
        """prefcenter itself, e.g. ``dormancy`` sunsetting a customer."""
        return cls("system", name)


def as_text(value: LedgerValue) -> str | None:
    """How a value is written in the ledger's before/after columns; None stays NULL."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: times must be timezone-aware")
        return value.astimezone(dt.UTC).isoformat()
    return str(value)


def record(
    session: Session,
    customer_id: uuid.UUID,
    actor: Actor,
    field: str,
    before: LedgerValue,
    after: LedgerValue,
    *,
    details: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> ConsentLedgerEntry | None:
    """Append one change; nothing is written (None) when before and after are the same."""
    row = entry_row(customer_id, actor, field, before, after, details=details, now=now or utcnow())
    if row is None:
        return None
    entry = ConsentLedgerEntry(**row)
    session.add(entry)
    session.flush()
    return entry


def entry_row(
    customer_id: uuid.UUID,
    actor: Actor,
    field: str,
    before: LedgerValue,
    after: LedgerValue,
    *,
    details: dict[str, Any] | None = None,
    now: dt.datetime,
) -> dict[str, Any] | None:
    """The ledger row :func:`record` would add, as a plain dict; None for a no-op."""
    before_text, after_text = as_text(before), as_text(after)
    if before_text == after_text:
        return None
    return {
        "customer_id": customer_id,
        "actor_type": actor.type,
        # Truncated to the columns' sizes: a long user agent must not make a change fail.
        "actor_id": actor.id[:128] if actor.id else None,
        "ip": actor.ip[:45] if actor.ip else None,
        "user_agent": actor.user_agent[:500] if actor.user_agent else None,
        "field": field,
        "before": before_text,
        "after": after_text,
        "at": now,
        "details": details or {},
    }


def record_many(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Append rows made by :func:`entry_row`, in their order, in one statement.

    A Core insert, so the outbound webhooks' outbox is told of the changes here, as it
    is told of the ORM entries :func:`record` adds (prefcenter.services.webhooks).
    """
    if not rows:
        return 0
    session.execute(sa.insert(ConsentLedgerEntry.__table__), list(rows))
    webhooks.note_changes(session, rows)
    return len(rows)


def history(session: Session, customer_id: uuid.UUID) -> list[ConsentLedgerEntry]:
    """Every change for a customer, oldest first."""
    return list(
        session.scalars(
            sa.select(ConsentLedgerEntry)
            .where(ConsentLedgerEntry.customer_id == customer_id)
            .order_by(ConsentLedgerEntry.at, ConsentLedgerEntry.id)
        )
    )
