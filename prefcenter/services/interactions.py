"""Interactions pushed by loyalty programs: ingested in batches, idempotently, set-based.

A batch is three statements whatever its size: resolve the members' ids, insert every new
interaction with ON CONFLICT DO NOTHING on (source, idempotency_key) returning what was
inserted, and move ``customers.last_interaction_at`` forward for the members concerned.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..models import Customer, Interaction

MAX_BATCH = 1000
CREATED, DUPLICATE, UNKNOWN_CUSTOMER = "created", "duplicate", "unknown_customer"


@dataclasses.dataclass(frozen=True)
class NewInteraction:
    external_id: str
    kind: str
    occurred_at: dt.datetime
    idempotency_key: str
    data: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Outcome:
    index: int
    idempotency_key: str
    status: str  # created | duplicate | unknown_customer


def _insert(session: Session, table: Any) -> Any:
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def ingest(
    session: Session, source: str, items: Sequence[NewInteraction], *, now: dt.datetime
) -> list[Outcome]:
    """Record the interactions; one outcome per item, in order.

    Replaying an idempotency key (from an earlier batch or earlier in this one) records
    nothing and reports the item as a duplicate.
    """
    if len(items) > MAX_BATCH:
        raise ValueError(f"at most {MAX_BATCH} interactions per batch, got {len(items)}")
    external_ids = {item.external_id for item in items}
    found = session.execute(
        sa.select(Customer.external_id, Customer.id).where(Customer.external_id.in_(external_ids))
    )
    ids = {external_id: customer_id for external_id, customer_id in found}
    rows: list[dict[str, Any]] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(items):
        customer_id = ids.get(item.external_id)
        if customer_id is None or item.idempotency_key in first_index:
            continue
        first_index[item.idempotency_key] = index
        rows.append(
            {
                "id": uuid.uuid4(),
                "customer_id": customer_id,
                "kind": item.kind,
                "occurred_at": item.occurred_at,
                "source": source,
                "idempotency_key": item.idempotency_key,
                "data": item.data,
                "created_at": now,
            }
        )
    inserted: set[str] = set()
    touched: set[uuid.UUID] = set()
    if rows:
        table = Interaction.__table__
        # executemany: SQLAlchemy batches the rows into few INSERT .. VALUES statements
        # (insertmanyvalues) with one cached compilation, RETURNING only what was inserted.
        statement = (
            _insert(session, table)
            .on_conflict_do_nothing(index_elements=["source", "idempotency_key"])
            .returning(table.c.idempotency_key, table.c.customer_id)
        )
        for key, customer_id in session.connection().execute(statement, rows):
            inserted.add(key)
            touched.add(customer_id)
    if touched:
        latest = (
            sa.select(sa.func.max(Interaction.occurred_at))
            .where(Interaction.customer_id == Customer.id)
            .scalar_subquery()
        )
        session.execute(
            sa.update(Customer)
            .where(Customer.id.in_(touched))
            .values(last_interaction_at=latest)
            .execution_options(synchronize_session=False)
        )
    outcomes = []
    for index, item in enumerate(items):
        if item.external_id not in ids:
            status = UNKNOWN_CUSTOMER
        elif first_index.get(item.idempotency_key) == index and item.idempotency_key in inserted:
            status = CREATED
        else:
            status = DUPLICATE
        outcomes.append(Outcome(index, item.idempotency_key, status))
    return outcomes
