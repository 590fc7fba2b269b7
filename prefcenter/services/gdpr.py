"""Data rights: export everything held about a customer, and erase a customer.

Both are called by the portal ("My data") and by the loyalty API; they take a session and
plain values and never commit.

Erasure keeps what the law asks us to keep and nothing else:

* the addresses survive only as suppression HMACs (reason ``erased``), so an erased
  address is never contacted again, even if it comes back in an import;
* every channel consent is refused and every subscription withdrawn through
  :mod:`prefcenter.services.preferences`, so the ledger tells the story like any change;
* the consent ledger is kept (it is the proof of consent, GDPR Art. 7(1), and stores
  address HMACs, never addresses), but the IP address and user agent of its rows are
  anonymized — the one update the ledger ever receives (see :func:`_anonymize_ledger`);
* names, addresses, attributes, interactions and call-back requests are removed;
  the contact log (channel, topic, time) is kept because frequency caps count it and it
  holds nothing that identifies the person.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..consent_settings import ConsentSettings, format_contact_hours
from ..models import (
    CallbackRequest,
    ConsentLedgerEntry,
    ContactLogEntry,
    Customer,
    Interaction,
    Topic,
    utcnow,
)
from ..models.vocabulary import CHANNELS
from . import preferences
from .ledger import Actor, history, record
from .suppressions import suppress_customer_addresses

EXPORT_FORMAT = "prefcenter.export/1"
ERASED_SOURCE = "erasure"


def _json(value: Any) -> Any:
    """A value as JSON can carry it: times in ISO 8601 (UTC), UUIDs as text."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return value


def _profile(customer: Customer) -> dict[str, Any]:
    return {
        "id": customer.id,
        "external_id": customer.external_id,
        "first_name": customer.first_name,
        "last_name": customer.last_name,
        "email": customer.email,
        "phone": customer.phone,
        "postal_address": {
            "line1": customer.postal_line1,
            "line2": customer.postal_line2,
            "postal_code": customer.postal_code,
            "city": customer.city,
            "country": customer.country,
        },
        "locale": customer.locale,
        "timezone": customer.timezone,
        "attributes": customer.attributes,
        "created_at": customer.created_at,
        "last_interaction_at": customer.last_interaction_at,
        "erased_at": customer.erased_at,
    }


def _preferences(customer: Customer) -> dict[str, Any]:
    preference = customer.preference
    if preference is None:
        return {
            "frequency": "any",
            "channel_order": [],
            "contact_hours": None,
            "paused_until": None,
        }
    return {
        "frequency": preference.frequency,
        "channel_order": preference.channels,
        "contact_hours": format_contact_hours(preference.contact_start, preference.contact_end),
        "paused_until": preference.paused_until,
    }


def export_customer(session: Session, customer: Customer) -> dict[str, Any]:
    """Everything held about the customer, JSON-ready (GDPR Art. 15 and 20).

    Profile, contact preferences, channel consents, topic subscriptions, the consent
    ledger, interactions, messages sent or planned (the contact log) and call-back requests.
    """
    topics = {t.id: t.key for t in session.scalars(sa.select(Topic))}
    interactions = session.scalars(
        sa.select(Interaction)
        .where(Interaction.customer_id == customer.id)
        .order_by(Interaction.occurred_at, Interaction.id)
    )
    messages = session.scalars(
        sa.select(ContactLogEntry)
        .where(ContactLogEntry.customer_id == customer.id)
        .order_by(ContactLogEntry.at, ContactLogEntry.id)
    )
    callbacks = session.scalars(
        sa.select(CallbackRequest)
        .where(CallbackRequest.customer_id == customer.id)
        .order_by(CallbackRequest.created_at, CallbackRequest.id)
    )
    document = {
        "format": EXPORT_FORMAT,
        "exported_at": utcnow(),
        "profile": _profile(customer),
        "preferences": _preferences(customer),
        "consents": [
            {
                "channel": c.channel,
                "status": c.status,
                "mechanism": c.mechanism,
                "source": c.source,
                "granted_at": c.granted_at,
                "refused_at": c.refused_at,
                "notice_hash": c.notice_hash,
            }
            for c in sorted(customer.consents, key=lambda c: CHANNELS.index(c.channel))
        ],
        "subscriptions": [
            {"topic": topics.get(s.topic_id), "status": s.status, "frequency": s.frequency}
            for s in sorted(customer.subscriptions, key=lambda s: topics.get(s.topic_id) or "")
        ],
        "ledger": [
            {
                "at": e.at,
                "field": e.field,
                "before": e.before,
                "after": e.after,
                "actor_type": e.actor_type,
                "actor_id": e.actor_id,
                "ip": e.ip,
                "user_agent": e.user_agent,
                "details": e.details,
            }
            for e in history(session, customer.id)
        ],
        "interactions": [
            {"kind": i.kind, "occurred_at": i.occurred_at, "source": i.source, "data": i.data}
            for i in interactions
        ],
        "messages": [
            {
                "at": m.at,
                "channel": m.channel,
                "topic": topics.get(m.topic_id) if m.topic_id else None,
                "kind": m.kind,
                "status": m.status,
                "message_ref": m.message_ref,
            }
            for m in messages
        ],
        "callback_requests": [
            {
                "day": c.day,
                "slot_start": c.slot_start,
                "slot_end": c.slot_end,
                "timezone": c.timezone,
                "phone": c.phone,
                "topic": c.topic_key,
                "note": c.note,
                "status": c.status,
                "requested_at": c.created_at,
            }
            for c in callbacks
        ],
    }
    result: dict[str, Any] = _json(document)
    return result


@dataclasses.dataclass(frozen=True)
class Erasure:
    """What an erasure did (nothing when the customer was already erased)."""

    already_erased: bool
    suppressions_added: int = 0
    ledger_rows_anonymized: int = 0


def _anonymize_ledger(session: Session, customer_id: uuid.UUID) -> int:
    """Blank the IP address and user agent of the customer's ledger rows.

    The ORM refuses every update of the ledger (models.ledger), and that stays true: this
    Core UPDATE on the connection, touching only ``ip`` and ``user_agent``, is the single
    exception, because GDPR erasure requires removing personal data while the rows
    themselves (who, what, before, after, when) must be kept as the proof of consent.
    """
    table = ConsentLedgerEntry.__table__
    result = session.connection().execute(
        sa.update(table)
        .where(
            table.c.customer_id == customer_id,
            sa.or_(table.c.ip.is_not(None), table.c.user_agent.is_not(None)),
        )
        .values(ip=None, user_agent=None)
    )
    # Objects already loaded must not show the values we just removed.
    for obj in list(session.identity_map.values()):
        if isinstance(obj, ConsentLedgerEntry) and obj.customer_id == customer_id:
            session.expire(obj, ["ip", "user_agent"])
    return int(result.rowcount or 0)


def erase_customer(
    session: Session,
    customer: Customer,
    actor: Actor,
    *,
    cfg: ConsentSettings,
    now: dt.datetime | None = None,
) -> Erasure:
    """Erase the customer (GDPR Art. 17); a second call changes nothing.

    Order matters: addresses are suppressed while they are still known, consents and
    subscriptions withdrawn while the customer may still change them, then the personal
    data is removed and ``erased_at`` set.
    """
    now = now or utcnow()
    if customer.erased_at is not None:
        return Erasure(already_erased=True)

    added = suppress_customer_addresses(session, customer, "erased", cfg=cfg, now=now)
    for channel in CHANNELS:
        preferences.refuse(session, customer, channel, actor, now=now, source=ERASED_SOURCE)
    for subscription in list(customer.subscriptions):
        if subscription.status == "subscribed":
            preferences.set_subscription(
                session, customer, subscription.topic, False, actor, now=now
            )
    for kind in preferences.ADDRESS_KINDS:
        preferences.set_address(session, customer, kind, None, actor, cfg=cfg, now=now)

    customer.first_name = None
    customer.last_name = None
    customer.external_id = None
    customer.attributes = {}
    customer.last_interaction_at = None
    session.execute(sa.delete(Interaction).where(Interaction.customer_id == customer.id))
    session.execute(sa.delete(CallbackRequest).where(CallbackRequest.customer_id == customer.id))
    record(session, customer.id, actor, "erased_at", None, now, now=now)
    customer.erased_at = now
    session.flush()
    anonymized = _anonymize_ledger(session, customer.id)
    return Erasure(
        already_erased=False, suppressions_added=added, ledger_rows_anonymized=anonymized
    )
