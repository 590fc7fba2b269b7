"""SendGrid's Signed Event Webhook: verify, de-duplicate, and turn events into facts.

* Every request is verified (ECDSA P-256 over ``timestamp + body``, the verification
  key from the settings, the ``sendgrid`` library's helper); a missing or bad signature,
  or a timestamp outside the tolerance, changes nothing.
* Events are de-duplicated by ``sg_event_id`` (SendGrid retries for up to 24 hours):
  ``INSERT … ON CONFLICT DO NOTHING RETURNING`` keeps only the new ones, set-based.
* A batch is a handful of statements whatever its size and mix (on PostgreSQL each batch
  travels as one JSON parameter): the new event ids with their deliveries, one
  forward-only UPDATE of the deliveries, the engagement interactions with the customers'
  last interaction, the suppressions, and the consent changes with their ledger rows.
  Within a batch, a delivery's or a customer's events count in time order.
* The delivery is found through the ``delivery_id`` custom argument (SendGrid puts
  custom arguments at the top level of each event).
* Mapping: ``delivered`` / human ``open`` / ``click`` move the delivery forward only;
  ``click`` and human ``open`` are engagement interactions (the customer is not dormant);
  an ``open`` flagged ``sg_machine_open`` is recorded on the delivery but is not
  engagement; hard ``bounce`` and ``dropped`` for a bounced or invalid address fail the
  delivery and suppress the address; ``spamreport`` suppresses it and refuses email
  consent; ``unsubscribe`` leaves every marketing topic; ``group_unsubscribe`` /
  ``group_resubscribe`` leave / rejoin the delivery's topic — consent changes go through
  the preference services' batch form (:func:`prefcenter.services.preferences.apply_batch`)
  and the ledger, with the provider as actor: one row per field that changed, none for
  a change that changes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import re
import types
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sendgrid.helpers.eventwebhook import EventWebhook
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from prefcenter.consent_settings import ConsentSettings
from prefcenter.db import is_transient, lock_in_order, recordset, typed_recordset
from prefcenter.models import Customer, Interaction, Topic
from prefcenter.models.base import UTCDateTime
from prefcenter.services import preferences, suppressions
from prefcenter.services.interactions import move_last_interaction
from prefcenter.services.ledger import Actor

from .models import Campaign, Delivery, ProviderEvent

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
PROVIDER = Actor("provider", "sendgrid")
MAX_EVENTS = 10_000


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


@dataclasses.dataclass(frozen=True)
class _Event:
    """One event, read once: its id, kind, delivery id (None if not ours) and time."""

    id: str
    kind: str
    delivery_id: str | None  # canonical text: ids stay text from the JSON to the SQL
    at: dt.datetime
    order: int  # its place in the batch: among events of the same second, the first first
    raw: dict[str, Any]

    @property
    def machine_open(self) -> bool:
        return self.kind == "open" and bool(self.raw.get("sg_machine_open"))


@dataclasses.dataclass(frozen=True)
class _Target:
    customer_id: str
    topic_id: str


def _uuid(value: Any) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _delivery_key(value: Any) -> str | None:
    """The delivery id's canonical text (as we sent it, checked without parsing it)."""
    if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
        return value
    parsed = _uuid(value)
    return str(parsed) if parsed else None


def _at(event: dict[str, Any], now: dt.datetime) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp(int(event["timestamp"]), dt.UTC)
    except (KeyError, TypeError, ValueError, OverflowError):
        return now


def ingest_retrying(
    session: Session,
    events: Sequence[dict[str, Any]],
    now: dt.datetime,
    *,
    cfg: ConsentSettings,
    attempts: int = 3,
) -> Ingested:
    """:func:`ingest` in a savepoint, run again when PostgreSQL gives up on it.

    SendGrid posts batches concurrently, and two batches may touch the same deliveries
    and customers: ingest locks them in order, but a deadlock or serialization failure
    elsewhere (a worker marking those deliveries sent) rolls the savepoint back and the
    batch is applied again, rather than answering 5xx for a transient conflict.
    """
    for attempt in range(1, attempts + 1):
        try:
            with session.begin_nested():
                return ingest(session, events, now, cfg=cfg)
        except sa.exc.DBAPIError as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            log.warning("SendGrid event batch ran into %s; applying it again", exc.orig)
    raise AssertionError("unreachable")  # the last attempt returns or raises


def ingest(
    session: Session, events: Sequence[dict[str, Any]], now: dt.datetime, *, cfg: ConsentSettings
) -> Ingested:
    """Apply a batch of events once each, in the caller's transaction.

    A handful of statements per batch whatever its size and mix: the new event ids with
    their deliveries, the deliveries' statuses, the engagement interactions with the
    customers' last interaction, the suppressions, the consent changes with their ledger.
    """
    result = Ingested(received=len(events))
    unique: dict[str, _Event] = {}
    for order, event in enumerate(events):
        event_id = event.get("sg_event_id")
        if not isinstance(event_id, str) or not event_id or len(event_id) > 100:
            result.without_id += 1
        elif event_id not in unique:
            kind = str(event.get("event", ""))[:32]
            delivery_id = _delivery_key(event.get("delivery_id"))
            unique[event_id] = _Event(event_id, kind, delivery_id, _at(event, now), order, event)
    if not unique:
        return result
    targets = _record_events(session, list(unique.values()), now)
    result.new = len(targets)
    result.duplicates = len(events) - result.without_id - result.new
    new_events = [e for e in unique.values() if e.id in targets]
    deliveries = {e.delivery_id: t for e in new_events if (t := targets[e.id]) is not None}
    result.unknown_delivery = sum(1 for e in new_events if targets[e.id] is None)
    result.suppressed = _suppress(session, new_events, now, cfg)
    result.consent_changes = _consent_changes(session, new_events, deliveries, now)
    # The rows concurrent batches share most (customers, deliveries) are locked last, so
    # that another batch waits for them as briefly as possible (until the commit).
    result.engagements = _engagements(session, new_events, deliveries, now)
    _advance(session, new_events, deliveries, now)
    return result


def _postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _insert_new(
    session: Session, table: sa.Table, rows: list[dict[str, Any]], unique: list[str], returning: Any
) -> set[Any]:
    """SQLite: ``INSERT … ON CONFLICT (unique) DO NOTHING RETURNING`` (an executemany)."""
    statement = (
        sqlite.insert(table).on_conflict_do_nothing(index_elements=unique).returning(returning)
    )
    return {value for (value,) in session.connection().execute(statement, rows)}


def _record_events(
    session: Session, events: list[_Event], now: dt.datetime
) -> dict[str, _Target | None]:
    """Insert the events not seen before, each with its delivery if it is one of ours.

    Returns the new events' ids, with the delivery's customer and topic (None: a message
    sent by something else). PostgreSQL: one statement.
    """
    table = ProviderEvent.__table__
    rows = [{"event_id": e.id, "event": e.kind, "delivery_id": e.delivery_id} for e in events]
    if _postgresql(session):
        batch = typed_recordset(table, rows)
        batch = sa.select(batch.c.event_id, batch.c.event, batch.c.delivery_id).cte("batch")
        known = (
            sa.select(Delivery.id, Delivery.customer_id, Campaign.topic_id)
            .join(Campaign, Campaign.id == Delivery.campaign_id)
            .where(Delivery.id.in_(sa.select(batch.c.delivery_id)))
            .cte("known")
        )
        new = (
            postgresql.insert(table)
            .from_select(
                ["event_id", "event", "delivery_id", "received_at"],
                sa.select(
                    batch.c.event_id, batch.c.event, known.c.id, sa.literal(now, UTCDateTime())
                )
                .select_from(batch.outerjoin(known, known.c.id == batch.c.delivery_id))
                # In key order: concurrent batches sharing events (retries) wait, never deadlock.
                .order_by(batch.c.event_id),
            )
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(table.c.event_id, table.c.delivery_id)
            .cte("new")
        )
        # One JSON document back rather than 1,000 rows (cheaper to read in Python).
        found = sa.func.json_agg(
            sa.func.json_build_array(
                new.c.event_id,
                sa.cast(known.c.customer_id, sa.Text),
                sa.cast(known.c.topic_id, sa.Text),
            )
        )
        answer = session.connection().scalar(
            sa.select(found).select_from(new.outerjoin(known, known.c.id == new.c.delivery_id))
        )
        return {
            event_id: _Target(customer_id, topic_id) if customer_id else None
            for event_id, customer_id, topic_id in answer or ()
        }
    ids = {uuid.UUID(r["delivery_id"]) for r in rows if r["delivery_id"]}
    known_rows = session.execute(
        sa.select(Delivery.id, Delivery.customer_id, Campaign.topic_id)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .where(Delivery.id.in_(ids))
    )
    ours = {str(r.id): _Target(str(r.customer_id), str(r.topic_id)) for r in known_rows}
    for row in rows:
        mine = row["delivery_id"] in ours
        # None: an event of a message sent by something else
        row["delivery_id"] = uuid.UUID(row["delivery_id"]) if mine else None
        row["received_at"] = now
    fresh = _insert_new(session, table, rows, ["event_id"], table.c.event_id)
    return {e.id: ours.get(e.delivery_id) for e in events if e.id in fresh}


def _is_hard_failure(event: dict[str, Any]) -> bool:
    kind = event.get("event")
    if kind == "bounce":
        return event.get("type", "bounce") == "bounce"  # "blocked" is temporary
    if kind == "dropped":
        reason = str(event.get("reason", "")).lower()
        return "bounced address" in reason or "invalid" in reason
    return False


# Forward-only statuses, in order: an event moves a delivery only to a later one of these.
_RANK = {"queued": 0, "sending": 1, "sent": 2, "delivered": 3, "opened": 4, "clicked": 5}
_POSITIVE = {"delivered": "delivered", "open": "opened", "click": "clicked"}
_BEFORE_DELIVERY = ("queued", "sending", "sent")  # what a hard failure can still fail


def _advance(
    session: Session,
    events: Sequence[_Event],
    deliveries: dict[str, _Target],
    now: dt.datetime,
) -> None:
    """Delivery statuses and first times, forward only: one UPDATE for the whole batch.

    Per delivery, the batch's events count in time order (batch order within a second):
    a hard failure before any sign of delivery fails a message not yet delivered, a
    later one cannot undo the delivery; statuses only move forward.
    """
    per: dict[str, dict[str, Any]] = {}
    for event in sorted(events, key=lambda e: (e.at, e.order)):
        status = None if event.machine_open else _POSITIVE.get(event.kind)
        fails = status is None and not event.machine_open and _is_hard_failure(event.raw)
        if event.delivery_id not in deliveries or not (status or fails or event.machine_open):
            continue  # processed, deferred, and events of messages that are not ours
        row = per.setdefault(
            event.delivery_id,
            {
                "d": event.delivery_id,
                "delivered": None,
                "opened": None,
                "clicked": None,
                "machine_opened": None,
                "best": -1,
                "best_status": None,
                "fails_first": False,
                "error": None,
            },
        )
        if event.machine_open:
            row["machine_opened"] = row["machine_opened"] or event.at
        elif status is not None:
            row["delivered"] = row["delivered"] or event.at  # an open or click proves delivery
            if status != "delivered":
                row[status] = row[status] or event.at
            if _RANK[status] > row["best"]:
                row["best"], row["best_status"] = _RANK[status], status
        elif row["error"] is None:
            reason = f"{event.kind}: {event.raw.get('reason') or event.raw.get('type') or ''}"
            row["error"] = reason.strip(": ")[:1000]
            row["fails_first"] = row["best_status"] is None
    if not per:
        return
    params = list(per.values())
    table = Delivery.__table__
    names = {
        "d": sa.Uuid(),
        "delivered": UTCDateTime(),
        "opened": UTCDateTime(),
        "clicked": UTCDateTime(),
        "machine_opened": UTCDateTime(),
        "best": sa.Integer(),
        "best_status": sa.String(),
        "fails_first": sa.Boolean(),
        "error": sa.Text(),
    }
    if _postgresql(session):
        lock_in_order(session, table.c.id, per)  # concurrent batches: no deadlock
        batch = recordset(params, *(sa.column(n, t) for n, t in names.items()))
        source: Any = batch.c
        target = table.c.id == source.d
    else:
        source = types.SimpleNamespace(**{n: sa.bindparam(n, type_=t) for n, t in names.items()})
        target = table.c.id == source.d
        params = [{**p, "d": uuid.UUID(p["d"])} for p in params]
    rank = sa.case(_RANK, value=table.c.status, else_=None)
    before_delivery = sa.or_(*(table.c.status == s for s in _BEFORE_DELIVERY))
    fails = source.error.is_not(None)
    status = sa.case(
        (sa.and_(source.fails_first, before_delivery), "failed"),
        (rank < source.best, source.best_status),
        (sa.and_(fails, before_delivery), "failed"),
        else_=table.c.status,
    )
    changes = sa.or_(
        status != table.c.status,
        *(
            sa.and_(table.c[column].is_(None), value.is_not(None))
            for column, value in (
                ("delivered_at", source.delivered),
                ("opened_at", source.opened),
                ("clicked_at", source.clicked),
                ("machine_opened_at", source.machine_opened),
            )
        ),
        sa.and_(fails, table.c.last_error.is_distinct_from(source.error)),
    )
    statement = (
        sa.update(table)
        .where(target, changes)  # a repeat that changes nothing writes nothing
        .values(
            status=status,
            delivered_at=sa.func.coalesce(table.c.delivered_at, source.delivered),
            opened_at=sa.func.coalesce(table.c.opened_at, source.opened),
            clicked_at=sa.func.coalesce(table.c.clicked_at, source.clicked),
            machine_opened_at=sa.func.coalesce(table.c.machine_opened_at, source.machine_opened),
            last_error=sa.func.coalesce(source.error, table.c.last_error),
            updated_at=now,
        )
    )
    if _postgresql(session):
        session.connection().execute(statement)
    else:
        session.connection().execute(statement, params)


def _engagements(
    session: Session,
    events: Sequence[_Event],
    deliveries: dict[str, _Target],
    now: dt.datetime,
) -> int:
    """Clicks and human opens become inbound interactions (idempotent by event id), and
    move the customers' last interaction forward: one statement on PostgreSQL."""
    rows = []
    for event in events:
        target = deliveries.get(event.delivery_id)
        kind = {"click": "email_click", "open": "email_open"}.get(event.kind)
        if target is None or kind is None or event.machine_open:
            continue
        rows.append(
            {
                "id": str(uuid.uuid4()),
                "customer_id": target.customer_id,
                "kind": kind,
                "occurred_at": min(event.at, now),
                "source": "sendgrid",
                "idempotency_key": event.id,
                "data": {"delivery_id": event.raw.get("delivery_id"), "url": event.raw.get("url")},
                "created_at": now,
            }
        )
    if not rows:
        return 0
    table = Interaction.__table__
    if _postgresql(session):
        batch = typed_recordset(table, rows)
        inserted = (
            postgresql.insert(table)
            .from_select(list(rows[0]), sa.select(*(batch.c[n] for n in rows[0])))
            .on_conflict_do_nothing(index_elements=["source", "idempotency_key"])
            .returning(table.c.customer_id, table.c.occurred_at)
            .cte("inserted")
        )
        latest = (
            sa.select(inserted.c.customer_id, sa.func.max(inserted.c.occurred_at).label("at"))
            .group_by(inserted.c.customer_id)
            .subquery("latest")
        )
        customers = Customer.__table__
        lock_in_order(session, customers.c.id, {r["customer_id"] for r in rows})
        last = customers.c.last_interaction_at
        session.connection().execute(
            sa.update(customers)
            .add_cte(inserted)
            .where(customers.c.id == latest.c.customer_id)
            .where(sa.or_(last.is_(None), last < latest.c.at))  # only rows that change
            .values(last_interaction_at=latest.c.at, updated_at=now)
        )
        return len(rows)
    for row in rows:  # SQLite: the Uuid columns want UUIDs
        row["id"], row["customer_id"] = uuid.UUID(row["id"]), uuid.UUID(row["customer_id"])
    touched = _insert_new(session, table, rows, ["source", "idempotency_key"], table.c.customer_id)
    if touched:
        move_last_interaction(session, Customer.id.in_(touched))
    return len(rows)


def _suppress(
    session: Session, events: Sequence[_Event], now: dt.datetime, cfg: ConsentSettings
) -> int:
    """Hard bounces, drops of bad addresses and spam reports: the addresses suppressed,
    in one statement (how many were not suppressed yet)."""
    entries = []
    for event in events:
        email = event.raw.get("email")
        spam = event.kind == "spamreport"
        if (spam or _is_hard_failure(event.raw)) and isinstance(email, str) and "@" in email:
            reason = "spam_complaint" if spam else "hard_bounce"
            entries.append((email, reason, f"sendgrid {event.kind}"))
    if not entries:
        return 0
    return suppressions.suppress_many(session, "email", entries, cfg=cfg, now=now)


_CONSENT_KINDS = ("spamreport", "unsubscribe", "group_unsubscribe", "group_resubscribe")


def _consent_changes(
    session: Session,
    events: Sequence[_Event],
    deliveries: dict[str, _Target],
    now: dt.datetime,
) -> int:
    """Spam reports, unsubscribes and group (un)subscribes, in time order, through the
    preference service's batch form and the ledger (actor: provider): how many fields
    changed (one ledger row each)."""
    wanted = sorted(
        (e for e in events if e.kind in _CONSENT_KINDS and e.delivery_id in deliveries),
        key=lambda e: (e.at, e.order),
    )
    if not wanted:
        return 0
    marketing: list[uuid.UUID] = []
    if any(e.kind == "unsubscribe" for e in wanted):
        marketing = list(
            session.scalars(
                sa.select(Topic.id)
                .where(Topic.kind == "marketing", Topic.active.is_(True))
                .order_by(Topic.key)
            )
        )
    changes: list[preferences.BatchChange] = []
    for event in wanted:
        target = deliveries[event.delivery_id]
        details = {"event": event.kind, "sg_event_id": event.id}
        common = {"customer_id": uuid.UUID(target.customer_id), "details": details}
        if event.kind == "spamreport":
            changes.append(preferences.BatchChange(channel="email", source="sendgrid", **common))
        elif event.kind == "unsubscribe":
            changes += [preferences.BatchChange(topic_id=t, **common) for t in marketing]
        else:
            subscribe = event.kind == "group_resubscribe"
            changes.append(
                preferences.BatchChange(
                    topic_id=uuid.UUID(target.topic_id), subscribed=subscribe, **common
                )
            )
    return preferences.apply_batch(session, changes, PROVIDER, now=now).changed
