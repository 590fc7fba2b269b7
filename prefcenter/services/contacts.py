"""Reserving contacts under the policy, atomically.

Frequency caps count messages sent *or reserved*. A reservation is written in the
same transaction as the decision that allowed it, after locking the customers
concerned, so two campaigns planned at the same moment for the same customer can
never together exceed a cap:

* PostgreSQL: ``SELECT … FOR UPDATE`` on the customers' rows, in id order (no
  deadlock between two planners); the second planner waits, then its decisions see
  the first one's reservations (each statement takes a fresh snapshot).
* SQLite: every transaction starts with ``BEGIN IMMEDIATE`` (prefcenter.db), so
  writers are serialized already.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .. import policy
from ..consent_settings import ConsentSettings
from ..models import ContactLogEntry, Customer, utcnow


@dataclasses.dataclass(frozen=True)
class Reserved:
    """What a set-based reservation did: contacts reserved per channel and decision."""

    by_channel: dict[str, int]
    deferred: int

    @property
    def total(self) -> int:
        return sum(self.by_channel.values())


def lock_customers(session: Session, customer_ids: sa.Select) -> None:
    """Lock the selected customers' rows until the transaction ends (PostgreSQL)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    locked = (
        sa.select(Customer.id)
        .where(Customer.id.in_(customer_ids.scalar_subquery()))
        .order_by(Customer.id)
        .with_for_update()
        .subquery("locked")
    )
    # Counted in the database: the rows are locked without a million ids coming back.
    session.execute(sa.select(sa.func.count()).select_from(locked)).scalar_one()


def new_id(session: Session) -> sa.ColumnElement[uuid.UUID]:
    if session.get_bind().dialect.name == "postgresql":
        return sa.func.gen_random_uuid()
    # SQLite stores UUIDs as 32 hex digits.
    return sa.func.lower(sa.func.hex(sa.func.randomblob(16)))


def insert_reservations(
    session: Session, message: policy.Message, contacts: sa.Select, now: dt.datetime
) -> None:
    """``INSERT … SELECT`` a reservation of ``message`` for each row of ``contacts``
    (customer id, channel, contact time): the set-based way planners reserve."""
    rows = contacts.subquery("contacts")
    customer_id, channel, at = rows.c
    session.execute(
        sa.insert(ContactLogEntry).from_select(
            [
                "id",
                "customer_id",
                "channel",
                "topic_id",
                "kind",
                "at",
                "status",
                "message_ref",
                "created_at",
                "updated_at",
            ],
            sa.select(
                new_id(session),
                customer_id,
                channel,
                sa.literal(message.topic_id, sa.Uuid()),
                sa.literal(message.kind),
                at,
                sa.literal("reserved"),
                sa.literal(message.message_ref),
                sa.literal(now, ContactLogEntry.created_at.type),
                sa.literal(now, ContactLogEntry.updated_at.type),
            ),
        )
    )


def reserve_audience(
    session: Session,
    message: policy.Message,
    candidates: sa.Select,
    at: dt.datetime,
    *,
    cfg: ConsentSettings,
) -> Reserved:
    """Reserve the message for every candidate the policy lets us contact.

    Each reservation is timed at the contact time (now, or the customer's next window
    opening for a deferred message). Candidates already holding a reservation for
    this message are left alone, so planning the same message twice reserves nothing
    more.
    """
    if not message.message_ref:
        raise ValueError("a reservation needs the message's message_ref")
    lock_customers(session, candidates)
    already = sa.select(ContactLogEntry.customer_id).where(
        ContactLogEntry.message_ref == message.message_ref
    )
    fresh = candidates.where(candidates.selected_columns[0].not_in(already))
    now = utcnow()
    with policy.audience(session, message, fresh, at, cfg=cfg) as audience:
        decided = audience.query.subquery("decided")
        insert_reservations(
            session,
            message,
            sa.select(decided.c.customer_id, decided.c.channel, decided.c.contact_at).where(
                decided.c.decision.in_((policy.SEND, policy.DEFER))
            ),
            now,
        )
    mine = (
        sa.select(ContactLogEntry.channel, (ContactLogEntry.at > at).label("later"))
        .where(ContactLogEntry.message_ref == message.message_ref)
        .subquery()
    )
    counts = session.execute(
        sa.select(mine.c.channel, mine.c.later, sa.func.count()).group_by(
            mine.c.channel, mine.c.later
        )
    ).all()
    by_channel: dict[str, int] = {}
    deferred = 0
    for channel, later, count in counts:
        by_channel[channel] = by_channel.get(channel, 0) + count
        deferred += count if later else 0
    return Reserved(by_channel, deferred)


def reserve(
    session: Session,
    customer: Customer,
    message: policy.Message,
    at: dt.datetime,
    *,
    cfg: ConsentSettings,
) -> policy.Decision:
    """Decide for one customer and, if allowed, reserve the contact (idempotent)."""
    if not message.message_ref:
        raise ValueError("a reservation needs the message's message_ref")
    lock_customers(session, sa.select(sa.literal(customer.id, sa.Uuid())))
    existing = session.scalar(
        sa.select(ContactLogEntry).where(
            ContactLogEntry.customer_id == customer.id,
            ContactLogEntry.message_ref == message.message_ref,
        )
    )
    if existing is not None and existing.status != "released":
        until = existing.at if existing.at > at else None
        return policy.Decision(
            policy.DEFER if until else policy.SEND,
            existing.channel,
            policy.QUIET_HOURS if until else None,
            until,
        )
    decision = policy.choose(session, customer, message, at, cfg=cfg)
    if decision.contacts:
        contact_at = decision.until or at
        if existing is not None:
            existing.status, existing.at, existing.channel = (
                "reserved",
                contact_at,
                decision.channel,
            )
        else:
            session.add(
                ContactLogEntry(
                    customer_id=customer.id,
                    channel=decision.channel,
                    topic_id=message.topic_id,
                    kind=message.kind,
                    at=contact_at,
                    status="reserved",
                    message_ref=message.message_ref,
                )
            )
        session.flush()
    return decision


def mark_sent(session: Session, customer_id: uuid.UUID, message_ref: str, at: dt.datetime) -> bool:
    """A reserved contact went out: it keeps counting, at the time it was really sent."""
    result = session.execute(
        sa.update(ContactLogEntry)
        .where(
            ContactLogEntry.customer_id == customer_id,
            ContactLogEntry.message_ref == message_ref,
            ContactLogEntry.status == "reserved",
        )
        .values(status="sent", at=at, updated_at=utcnow())
    )
    return result.rowcount == 1


def release(session: Session, customer_id: uuid.UUID, message_ref: str) -> bool:
    """A reserved contact will not be sent: it stops counting toward caps."""
    result = session.execute(
        sa.update(ContactLogEntry)
        .where(
            ContactLogEntry.customer_id == customer_id,
            ContactLogEntry.message_ref == message_ref,
            ContactLogEntry.status == "reserved",
        )
        .values(status="released", updated_at=utcnow())
    )
    return result.rowcount == 1
