"""Interactions pushed by loyalty programs: ingested in batches, idempotently, set-based.

On PostgreSQL a batch is one statement whatever its size: the items arrive as one JSON
document, the members are resolved, every new interaction is inserted with ON CONFLICT DO
NOTHING on (source, idempotency_key) returning what was inserted, and
``customers.last_interaction_at`` moves forward for the members concerned. Elsewhere
(SQLite) the same three steps are three statements.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
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


def ingest(
    session: Session, source: str, items: Sequence[NewInteraction], *, now: dt.datetime
) -> list[Outcome]:
    """Record the interactions; one outcome per item, in order.

    Replaying an idempotency key (from an earlier batch or earlier in this one) records
    nothing and reports the item as a duplicate.
    """
    if len(items) > MAX_BATCH:
        raise ValueError(f"at most {MAX_BATCH} interactions per batch, got {len(items)}")
    if not items:
        return []
    if session.get_bind().dialect.name == "postgresql":
        known, inserted = _record_postgresql(session, source, items, now)
    else:
        known, inserted = _record_portable(session, source, items, now)
    first_index: dict[str, int] = {}
    for index, item in enumerate(items):
        if item.external_id in known:
            first_index.setdefault(item.idempotency_key, index)
    outcomes = []
    for index, item in enumerate(items):
        if item.external_id not in known:
            status = UNKNOWN_CUSTOMER
        elif first_index[item.idempotency_key] == index and item.idempotency_key in inserted:
            status = CREATED
        else:
            status = DUPLICATE
        outcomes.append(Outcome(index, item.idempotency_key, status))
    return outcomes


# The whole batch travels as one JSON parameter; each member's first item per key is
# inserted. Rows: (True, external id, None) per member found, (False, key, customer) per insert.
_RECORD_POSTGRESQL = sa.text(
    """
WITH batch AS (
    SELECT * FROM jsonb_to_recordset(CAST(:batch AS jsonb)) AS b(
        ord integer, external_id text, kind text, occurred_at timestamptz,
        idempotency_key text, data jsonb)
), known AS (
    SELECT c.id, c.external_id FROM customers AS c
    WHERE c.external_id IN (SELECT external_id FROM batch)
), inserted AS (
    INSERT INTO interactions
        (id, customer_id, kind, occurred_at, source, idempotency_key, data, created_at)
    SELECT DISTINCT ON (b.idempotency_key)
        gen_random_uuid(), k.id, b.kind, b.occurred_at, :source, b.idempotency_key, b.data,
        :now
    FROM batch AS b JOIN known AS k ON k.external_id = b.external_id
    ORDER BY b.idempotency_key, b.ord
    ON CONFLICT (source, idempotency_key) DO NOTHING
    RETURNING customer_id, idempotency_key
)
SELECT true AS is_known, external_id AS value, NULL AS customer_id FROM known
UNION ALL
SELECT false, idempotency_key, customer_id FROM inserted
"""
)


def _record_postgresql(
    session: Session, source: str, items: Sequence[NewInteraction], now: dt.datetime
) -> tuple[set[str], set[str]]:
    """Two statements for the whole batch: (known external ids, idempotency keys inserted)."""
    batch = json.dumps(
        [
            {
                "ord": index,
                "external_id": item.external_id,
                "kind": item.kind,
                "occurred_at": item.occurred_at.astimezone(dt.UTC).isoformat(),
                "idempotency_key": item.idempotency_key,
                "data": item.data,
            }
            for index, item in enumerate(items)
        ],
        separators=(",", ":"),
    )
    rows = session.execute(_RECORD_POSTGRESQL, {"batch": batch, "source": source, "now": now})
    known: set[str] = set()
    inserted: set[str] = set()
    touched: set[uuid.UUID] = set()
    for is_known, value, customer_id in rows:
        if is_known:
            known.add(value)
        else:
            inserted.add(value)
            touched.add(customer_id)
    if touched:
        # Joined to unnest(): "id = ANY(array)" makes PostgreSQL scan every customer.
        ids = sa.bindparam("touched", list(touched), type_=postgresql.ARRAY(sa.Uuid()))
        touched_ids = sa.func.unnest(ids).table_valued("id").render_derived()
        move_last_interaction(session, Customer.id == touched_ids.c.id)
    return known, inserted


def move_last_interaction(session: Session, which: Any, **values: Any) -> None:
    """Set ``last_interaction_at`` of the customers ``which`` selects from their interactions.

    An ORM-enabled UPDATE: it also tells zope.sqlalchemy the transaction wrote something.
    """
    latest = (
        sa.select(sa.func.max(Interaction.occurred_at))
        .where(Interaction.customer_id == Customer.id)
        .scalar_subquery()
    )
    session.execute(
        sa.update(Customer)
        .where(which)
        .values(last_interaction_at=latest, **values)
        .execution_options(synchronize_session=False)
    )


def _record_portable(
    session: Session, source: str, items: Sequence[NewInteraction], now: dt.datetime
) -> tuple[set[str], set[str]]:
    """Three statements (SQLite): resolve the members, insert, move last_interaction_at."""
    external_ids = {item.external_id for item in items}
    found = session.execute(
        sa.select(Customer.external_id, Customer.id).where(Customer.external_id.in_(external_ids))
    )
    ids = {external_id: customer_id for external_id, customer_id in found}
    rows: list[dict[str, Any]] = []
    keys: set[str] = set()
    for item in items:
        customer_id = ids.get(item.external_id)
        if customer_id is None or item.idempotency_key in keys:
            continue
        keys.add(item.idempotency_key)
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
            sqlite.insert(table)
            .on_conflict_do_nothing(index_elements=["source", "idempotency_key"])
            .returning(table.c.idempotency_key, table.c.customer_id)
        )
        for key, customer_id in session.connection().execute(statement, rows):
            inserted.add(key)
            touched.add(customer_id)
    if touched:
        move_last_interaction(session, Customer.id.in_(touched))
    return set(ids), inserted
