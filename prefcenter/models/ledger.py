from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base, enum_column, utcnow
from .vocabulary import ACTOR_TYPES


class LedgerIsAppendOnly(Exception):
    """Raised when code tries to change or remove a consent ledger entry."""


class ConsentLedgerEntry(Base):
    """One change of one consent or preference field: the proof (GDPR Art. 7(1)).

    Append-only: rows are inserted, never updated or deleted through the ORM.
    """

    __tablename__ = "consent_ledger"
    __table_args__ = (sa.Index("ix_consent_ledger_customer_at", "customer_id", "at"),)

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    customer_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("customers.id"))
    actor_type: Mapped[str] = mapped_column(enum_column(*ACTOR_TYPES, name="actor_type"))
    actor_id: Mapped[str | None] = mapped_column(sa.String(128))
    field: Mapped[str] = mapped_column(sa.String(100))
    before: Mapped[str | None] = mapped_column(sa.Text)
    after: Mapped[str | None] = mapped_column(sa.Text)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ip: Mapped[str | None] = mapped_column(sa.String(45))
    user_agent: Mapped[str | None] = mapped_column(sa.String(500))
    # How and on what basis: mechanism, source, notice version/hash, proof supplied by an API.
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


def _refuse(mapper: Any, connection: Any, target: ConsentLedgerEntry) -> None:
    raise LedgerIsAppendOnly(
        f"consent ledger entry {target.id} cannot be changed or deleted: the ledger is append-only"
    )


event.listen(ConsentLedgerEntry, "before_update", _refuse)
event.listen(ConsentLedgerEntry, "before_delete", _refuse)


@event.listens_for(Session, "do_orm_execute")
def _refuse_bulk_changes(state: Any) -> None:
    if not (state.is_update or state.is_delete):
        return
    mapper = state.bind_mapper
    if mapper is not None and mapper.class_ is ConsentLedgerEntry:
        raise LedgerIsAppendOnly("bulk UPDATE/DELETE of the consent ledger is not allowed")
