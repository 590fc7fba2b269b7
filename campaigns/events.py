"""SendGrid's Signed Event Webhook: verify, de-duplicate, and turn events into facts.

* Every request is verified (ECDSA P-256 over ``timestamp + body``, the verification
  key from the settings, the ``sendgrid`` library's helper); a missing or bad signature,
  or a timestamp outside the tolerance, changes nothing.
* Events are de-duplicated by ``sg_event_id`` (SendGrid retries for up to 24 hours):
  ``INSERT … ON CONFLICT DO NOTHING RETURNING`` keeps only the new ones, set-based.
* The delivery is found through the ``delivery_id`` custom argument (SendGrid puts
  custom arguments at the top level of each event).
* Mapping: ``delivered`` / human ``open`` / ``click`` move the delivery forward only;
  ``click`` and human ``open`` are engagement interactions (the customer is not dormant);
  an ``open`` flagged ``sg_machine_open`` is recorded on the delivery but is not
  engagement; hard ``bounce`` and ``dropped`` for a bounced or invalid address fail the
  delivery and suppress the address; ``spamreport`` suppresses it and refuses email
  consent; ``unsubscribe`` leaves every marketing topic; ``group_unsubscribe`` /
  ``group_resubscribe`` leave / rejoin the delivery's topic — consent changes go through
  the preference services and the ledger, with the provider as actor.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sendgrid.helpers.eventwebhook import EventWebhook
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from prefcenter.consent_settings import ConsentSettings
from prefcenter.models import Customer, Interaction, Topic
from prefcenter.models.base import UTCDateTime
from prefcenter.services import preferences, suppressions
from prefcenter.services.interactions import move_last_interaction
from prefcenter.services.ledger import Actor

from .models import Campaign, Delivery, ProviderEvent

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
PROVIDER = Actor("provider", "sendgrid")
MAX_EVENTS = 10_000
# Forward-only statuses: an event may only move a delivery to a later one.
_EARLIER = {
    "delivered": ("queued", "sending", "sent"),
    "opened": ("queued", "sending", "sent", "delivered"),
    "clicked": ("queued", "sending", "sent", "delivered", "opened"),
    "failed": ("queued", "sending", "sent"),
}


class Rejected(Exception):
    """The request is not a genuine, fresh SendGrid batch: nothing was changed."""


@dataclasses.dataclass(frozen=True)
class WebhookSettings:
    verification_key: str | None  # the public key SendGrid shows (base64 DER)
    max_age: dt.timedelta = dt.timedelta(minutes=10)

    @classmethod
    def from_settings(cls, settings: Any) -> WebhookSettings:
        key = str(settings.get("sendgrid.webhook_verification_key") or "").strip() or None
        seconds = int(settings.get("sendgrid.webhook_max_age_seconds", 600))
        return cls(key, dt.timedelta(seconds=seconds))


@dataclasses.dataclass(frozen=True)
class WebhookConfig:
    settings: WebhookSettings
    consent: ConsentSettings


def verify(
    settings: WebhookSettings,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    now: dt.datetime,
) -> None:
    """Raise :class:`Rejected` unless the body is signed by SendGrid's key, recently."""
    if not settings.verification_key:
        raise Rejected("no verification key is configured (sendgrid.webhook_verification_key)")
    if not signature or not timestamp:
        raise Rejected("the signature headers are missing")
    try:
        signed_at = dt.datetime.fromtimestamp(int(timestamp), dt.UTC)
    except (ValueError, OverflowError):
        raise Rejected(f"the timestamp {timestamp!r} is not a Unix time") from None
    if abs(now - signed_at) > settings.max_age:
        raise Rejected(f"the timestamp {timestamp} is outside the accepted {settings.max_age}")
    try:
        payload = body.decode("utf-8")
        verifier = EventWebhook(settings.verification_key)
        genuine = verifier.verify_signature(payload, signature, timestamp)
    except (ValueError, TypeError):  # an unreadable key, signature or body
        genuine = False
    if not genuine:
        raise Rejected("the signature does not match")


def parse(body: bytes) -> list[dict[str, Any]]:
    try:
        events = json.loads(body)
    except ValueError:
        raise Rejected("the body is not JSON") from None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise Rejected("the body is not a list of events")
    if len(events) > MAX_EVENTS:
        raise Rejected(f"at most {MAX_EVENTS} events per request")
    return events


@dataclasses.dataclass
class Ingested:
    received: int = 0
    new: int = 0
    duplicates: int = 0
    without_id: int = 0
    unknown_delivery: int = 0
    engagements: int = 0
    suppressed: int = 0
    consent_changes: int = 0


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _at(event: dict[str, Any], now: dt.datetime) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp(int(event["timestamp"]), dt.UTC)
    except (KeyError, TypeError, ValueError, OverflowError):
        return now


def ingest(
    session: Session, events: Sequence[dict[str, Any]], now: dt.datetime, *, cfg: ConsentSettings
) -> Ingested:
    """Apply a batch of events once each, in the caller's transaction."""
    result = Ingested(received=len(events))
    unique: dict[str, dict[str, Any]] = {}
    for event in events:
        event_id = event.get("sg_event_id")
        if not isinstance(event_id, str) or not event_id or len(event_id) > 100:
            result.without_id += 1
        elif event_id not in unique:
            unique[event_id] = event
    rows = [
        {
            "event_id": event_id,
            "event": str(event.get("event", ""))[:32],
            "delivery_id": _uuid(event.get("delivery_id")),
            "received_at": now,
        }
        for event_id, event in unique.items()
    ]
    if not rows:
        return result
    known = set(
        session.scalars(
            sa.select(Delivery.id).where(
                Delivery.id.in_({r["delivery_id"] for r in rows if r["delivery_id"]})
            )
        )
    )
    for row in rows:
        if row["delivery_id"] not in known:
            row["delivery_id"] = None  # an event of a message sent by something else
    fresh = _record_events(session, rows)
    result.new = len(fresh)
    result.duplicates = len(events) - result.without_id - result.new
    new_events = [unique[event_id] for event_id in unique if event_id in fresh]
    deliveries = _deliveries(session, new_events)
    result.unknown_delivery = sum(
        1 for e in new_events if _uuid(e.get("delivery_id")) not in deliveries
    )
    _advance(session, new_events, deliveries, now)
    result.engagements = _engagements(session, new_events, deliveries, now)
    result.suppressed, result.consent_changes = _consent_events(
        session, new_events, deliveries, now, cfg
    )
    return result


def _postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _recordset(rows: list[dict[str, Any]], *columns: sa.ColumnClause) -> Any:
    """PostgreSQL: a whole batch as one JSON parameter, read back as typed rows.

    One statement and one short SQL text whatever the batch size (a 1,000-row VALUES
    list costs more to build and parse than the work it describes).
    """
    batch = sa.cast(sa.bindparam("batch", json.dumps(rows, default=str)), postgresql.JSONB)
    return (
        sa.func.jsonb_to_recordset(batch)
        .table_valued(*columns)
        .render_derived(name="batch", with_types=True)
    )


def _insert_new(
    session: Session, table: sa.Table, rows: list[dict[str, Any]], unique: list[str], returning: Any
) -> set[Any]:
    """``INSERT … ON CONFLICT (unique) DO NOTHING RETURNING``: what the rows really added.

    On PostgreSQL the whole batch is one JSON parameter (:func:`_recordset`), typed by the
    table's own columns; on SQLite an executemany.
    """
    if _postgresql(session):
        names = list(rows[0])
        batch = _recordset(rows, *(sa.column(n, table.c[n].type) for n in names))
        statement = (
            postgresql.insert(table)
            .from_select(names, sa.select(*(batch.c[n] for n in names)))
            .on_conflict_do_nothing(index_elements=unique)
            .returning(returning)
        )
        return set(session.connection().scalars(statement))
    statement = (
        sqlite.insert(table).on_conflict_do_nothing(index_elements=unique).returning(returning)
    )
    return {value for (value,) in session.connection().execute(statement, rows)}


def _record_events(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """Insert the events not seen before; return the ids of those that are new."""
    table = ProviderEvent.__table__
    return _insert_new(session, table, rows, ["event_id"], table.c.event_id)


@dataclasses.dataclass(frozen=True)
class _Target:
    customer_id: uuid.UUID
    topic_id: uuid.UUID


def _deliveries(session: Session, events: Sequence[dict[str, Any]]) -> dict[uuid.UUID, _Target]:
    ids = {i for i in (_uuid(e.get("delivery_id")) for e in events) if i}
    if not ids:
        return {}
    rows = session.execute(
        sa.select(Delivery.id, Delivery.customer_id, Campaign.topic_id)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .where(Delivery.id.in_(ids))
    )
    return {r.id: _Target(r.customer_id, r.topic_id) for r in rows}


def _is_hard_failure(event: dict[str, Any]) -> bool:
    kind = event.get("event")
    if kind == "bounce":
        return event.get("type", "bounce") == "bounce"  # "blocked" is temporary
    if kind == "dropped":
        reason = str(event.get("reason", "")).lower()
        return "bounced address" in reason or "invalid" in reason
    return False


def _advance(
    session: Session,
    events: Sequence[dict[str, Any]],
    deliveries: dict[uuid.UUID, _Target],
    now: dt.datetime,
) -> None:
    """Delivery statuses and first times, forward only: one executemany per kind of event."""
    updates: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        delivery_id = _uuid(event.get("delivery_id"))
        if delivery_id not in deliveries:
            continue
        kind, at = event.get("event"), _at(event, now)
        if kind == "delivered":
            updates.setdefault("delivered", []).append({"d": delivery_id, "at": at})
        elif kind == "open" and event.get("sg_machine_open"):
            updates.setdefault("machine_open", []).append({"d": delivery_id, "at": at})
        elif kind == "open":
            updates.setdefault("opened", []).append({"d": delivery_id, "at": at})
        elif kind == "click":
            updates.setdefault("clicked", []).append({"d": delivery_id, "at": at})
        elif _is_hard_failure(event):
            reason = f"{kind}: {event.get('reason') or event.get('type') or ''}".strip(": ")
            updates.setdefault("failed", []).append({"d": delivery_id, "error": reason[:1000]})
    table = Delivery.__table__
    for kind, params in updates.items():
        if _postgresql(session):
            # One UPDATE … FROM the batch; the earliest time per delivery, one row each.
            batch = _recordset(
                params,
                sa.column("d", sa.Uuid),
                sa.column("at", UTCDateTime()),
                sa.column("error", sa.Text),
            )
            source = (
                sa.select(
                    batch.c.d,
                    sa.func.min(batch.c.at).label("at"),
                    sa.func.max(batch.c.error).label("error"),
                )
                .group_by(batch.c.d)
                .subquery("source")
            )
            at, error, target = source.c.at, source.c.error, table.c.id == source.c.d
        else:
            at = sa.bindparam("at", type_=UTCDateTime())
            error, target = sa.bindparam("error"), table.c.id == sa.bindparam("d")
            params = [{"at": None, "error": None, **p} for p in params]
        values: dict[str, Any] = {"updated_at": now}
        if kind == "machine_open":
            values["machine_opened_at"] = sa.func.coalesce(table.c.machine_opened_at, at)
        elif kind == "failed":
            values["status"] = sa.case((_one_of(table, "failed"), "failed"), else_=table.c.status)
            values["last_error"] = error
        else:
            column = {"delivered": "delivered_at", "opened": "opened_at", "clicked": "clicked_at"}
            values[column[kind]] = sa.func.coalesce(table.c[column[kind]], at)
            values["status"] = sa.case((_one_of(table, kind), kind), else_=table.c.status)
            if kind in ("opened", "clicked"):  # an open or click proves delivery too
                values["delivered_at"] = sa.func.coalesce(table.c.delivered_at, at)
        statement = sa.update(table).where(target).values(**values)
        if _postgresql(session):
            session.connection().execute(statement, {"batch": json.dumps(params, default=str)})
        else:
            session.connection().execute(statement, params)


def _one_of(table: Any, kind: str) -> sa.ColumnElement[bool]:
    # Plain equalities, not IN: an expanding IN cannot be used with executemany.
    return sa.or_(*(table.c.status == status for status in _EARLIER[kind]))


def _engagements(
    session: Session,
    events: Sequence[dict[str, Any]],
    deliveries: dict[uuid.UUID, _Target],
    now: dt.datetime,
) -> int:
    """Clicks and human opens become inbound interactions (idempotent by event id)."""
    rows = []
    for event in events:
        target = deliveries.get(_uuid(event.get("delivery_id")))
        kind = {"click": "email_click", "open": "email_open"}.get(event.get("event"))
        if target is None or kind is None or event.get("sg_machine_open"):
            continue
        rows.append(
            {
                "id": uuid.uuid4(),
                "customer_id": target.customer_id,
                "kind": kind,
                "occurred_at": min(_at(event, now), now),
                "source": "sendgrid",
                "idempotency_key": event["sg_event_id"],
                "data": {"delivery_id": event.get("delivery_id"), "url": event.get("url")},
                "created_at": now,
            }
        )
    if not rows:
        return 0
    table = Interaction.__table__
    touched = _insert_new(session, table, rows, ["source", "idempotency_key"], table.c.customer_id)
    if touched:
        move_last_interaction(session, Customer.id.in_(touched))
    return len(rows)


def _consent_events(
    session: Session,
    events: Sequence[dict[str, Any]],
    deliveries: dict[uuid.UUID, _Target],
    now: dt.datetime,
    cfg: ConsentSettings,
) -> tuple[int, int]:
    """Suppressions and consent changes (rare: one service call each, through the ledger)."""
    suppressed = changes = 0
    marketing_topics: list[Topic] | None = None
    for event in events:
        kind = event.get("event")
        email = event.get("email")
        failed = _is_hard_failure(event) or kind == "spamreport"
        if failed and isinstance(email, str) and "@" in email:
            reason = "spam_complaint" if kind == "spamreport" else "hard_bounce"
            suppressed += suppressions.suppress(
                session, "email", email, reason, cfg=cfg, note=f"sendgrid {kind}", now=now
            )
        if kind not in ("spamreport", "unsubscribe", "group_unsubscribe", "group_resubscribe"):
            continue
        target = deliveries.get(_uuid(event.get("delivery_id")))
        if target is None:
            continue
        customer = session.get(Customer, target.customer_id)
        if customer is None or customer.erased_at is not None:
            continue
        if kind == "spamreport":
            preferences.refuse(session, customer, "email", PROVIDER, now=now, source="sendgrid")
        elif kind == "unsubscribe":
            if marketing_topics is None:
                marketing_topics = list(
                    session.scalars(
                        sa.select(Topic).where(Topic.kind == "marketing", Topic.active.is_(True))
                    )
                )
            for topic in marketing_topics:
                preferences.set_subscription(session, customer, topic, False, PROVIDER, now=now)
        else:
            topic = session.get_one(Topic, target.topic_id)
            subscribe = kind == "group_resubscribe"
            preferences.set_subscription(session, customer, topic, subscribe, PROVIDER, now=now)
        changes += 1
    return suppressed, changes
