"""Customers as the loyalty API sees them: upsert by external id, read, list by cursor.

Addresses and the timezone change through prefcenter.services.preferences (they are
consent-relevant and go to the ledger); names, locale and attributes are profile data.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, joinedload

from ..consent_settings import ADDRESS_KIND, ConsentSettings
from ..db import DriverQuery
from ..errors import InvalidField, InvalidInput
from ..models import ChannelConsent, ContactPreference, Customer, Topic, TopicSubscription
from ..models.vocabulary import CHANNELS, LOCALES
from . import preferences
from .ledger import Actor

PROFILE_FIELDS = ("first_name", "last_name", "locale", "attributes")
ADDRESS_FIELDS = {"email": "email", "phone": "phone", "postal_address": "postal"}
MAX_PAGE = 200


def get_customer(
    session: Session, external_id: str, *, with_preferences: bool = False
) -> Customer | None:
    """The (not erased) customer with this loyalty member id.

    ``with_preferences`` loads consents, subscriptions and contact preferences in the same
    query (a handful of rows each), for callers that show all of them.
    """
    query = sa.select(Customer).where(Customer.external_id == external_id)
    if with_preferences:
        query = query.options(
            joinedload(Customer.consents),
            joinedload(Customer.subscriptions),
            joinedload(Customer.preference),
        )
    return session.scalars(query).unique().one_or_none()


@dataclasses.dataclass(frozen=True)
class TopicChoice:
    """A topic and the customer's stored choice about it (None: never chosen)."""

    key: str
    regime: str
    status: str | None
    frequency: str | None


@dataclasses.dataclass(frozen=True)
class PreferencesShown:
    """Everything the API shows of a customer's preferences, as plain values."""

    email: str | None
    phone: str | None
    postal_address: dict[str, str | None] | None
    timezone: str
    consents: dict[str, str]  # channel -> status, only channels with a stored consent
    topics: tuple[TopicChoice, ...]  # every topic, by key
    has_preference: bool
    frequency: str | None
    channel_order: str | None
    contact_start: int | None
    contact_end: int | None
    paused_until: dt.datetime | None


def postal_address(
    line1: str | None,
    line2: str | None,
    postal_code: str | None,
    city: str | None,
    country: str | None,
) -> dict[str, str | None] | None:
    lines = {
        "line1": line1,
        "line2": line2,
        "postal_code": postal_code,
        "city": city,
        "country": country,
    }
    return lines if any(lines.values()) else None


def preferences_shown(customer: Customer, topics: Sequence[Topic]) -> PreferencesShown:
    """The same facts as :func:`read_preferences`, from a loaded customer (after a change)."""
    subscriptions = {s.topic_id: s for s in customer.subscriptions}
    preference = customer.preference
    return PreferencesShown(
        email=customer.email,
        phone=customer.phone,
        postal_address=postal_address(
            customer.postal_line1,
            customer.postal_line2,
            customer.postal_code,
            customer.city,
            customer.country,
        ),
        timezone=customer.timezone,
        consents={c.channel: c.status for c in customer.consents},
        topics=tuple(
            TopicChoice(
                t.key,
                t.regime,
                subscriptions[t.id].status if t.id in subscriptions else None,
                subscriptions[t.id].frequency if t.id in subscriptions else None,
            )
            for t in topics
        ),
        has_preference=preference is not None,
        frequency=preference.frequency if preference else None,
        channel_order=preference.channel_order if preference else None,
        contact_start=preference.contact_start if preference else None,
        contact_end=preference.contact_end if preference else None,
        paused_until=preference.paused_until if preference else None,
    )


def _customer_level() -> tuple[Any, list[Any]]:
    """The customer joined to their preference and consents (each unique per customer),
    and the columns read of them."""
    customers = Customer.__table__
    preference = ContactPreference.__table__
    consents = {ch: ChannelConsent.__table__.alias(f"consent_{ch}") for ch in CHANNELS}
    joined = customers.outerjoin(preference, preference.c.customer_id == customers.c.id)
    for channel, consent in consents.items():
        joined = joined.outerjoin(
            consent,
            sa.and_(consent.c.customer_id == customers.c.id, consent.c.channel == channel),
        )
    columns = [
        customers.c.email,
        customers.c.phone,
        customers.c.postal_line1,
        customers.c.postal_line2,
        customers.c.postal_code,
        customers.c.city,
        customers.c.country,
        customers.c.timezone,
        *(consent.c.status.label(f"{ch}_status") for ch, consent in consents.items()),
        preference.c.customer_id.label("preference_of"),
        preference.c.frequency,
        preference.c.channel_order,
        preference.c.contact_start,
        preference.c.contact_end,
        preference.c.paused_until,
    ]
    return joined, columns


def _preferences_query() -> sa.Select[Any]:
    # One row per topic (at least one): every table joined is unique per customer (and topic).
    customers = Customer.__table__
    topics = Topic.__table__
    subscription = TopicSubscription.__table__
    joined, columns = _customer_level()
    joined = joined.outerjoin(topics, sa.true()).outerjoin(
        subscription,
        sa.and_(
            subscription.c.customer_id == customers.c.id, subscription.c.topic_id == topics.c.id
        ),
    )
    return (
        sa.select(
            *columns,
            topics.c.key.label("topic_key"),
            topics.c.regime.label("topic_regime"),
            subscription.c.status.label("subscription_status"),
            subscription.c.frequency.label("subscription_frequency"),
        )
        .select_from(joined)
        .where(customers.c.external_id == sa.bindparam("external_id"))
        .order_by(topics.c.key)
    )


_PREFERENCES = _preferences_query()


def _preferences_document_query() -> sa.Select[Any]:
    """PostgreSQL: the same facts as one JSON array in one row (the customer's columns,
    then their topics as ``[key, regime, status, frequency]``), which the driver reads
    as one value rather than 22 columns of as many rows as there are topics."""
    joined, columns = _customer_level()
    topics = Topic.__table__
    subscription = TopicSubscription.__table__
    customers = Customer.__table__
    choices = (
        sa.select(
            sa.func.coalesce(
                sa.func.json_agg(
                    postgresql.aggregate_order_by(
                        sa.func.json_build_array(
                            topics.c.key,
                            topics.c.regime,
                            subscription.c.status,
                            subscription.c.frequency,
                        ),
                        topics.c.key,
                    )
                ),
                sa.literal_column("'[]'::json"),
            )
        )
        .select_from(
            topics.outerjoin(
                subscription,
                sa.and_(
                    subscription.c.customer_id == customers.c.id,
                    subscription.c.topic_id == topics.c.id,
                ),
            )
        )
        .correlate(customers)
        .scalar_subquery()
    )
    document = sa.func.json_build_array(*columns, choices, type_=postgresql.JSON)
    return (
        sa.select(document)
        .select_from(joined)
        .where(customers.c.external_id == sa.bindparam("external_id"))
    )


_PREFERENCES_DOCUMENT = DriverQuery(_preferences_document_query())
_DOCUMENT_NAMES = tuple(c.name for c in _customer_level()[1])


def read_preferences(session: Session, external_id: str) -> PreferencesShown | None:
    """The preferences of the customer with this loyalty member id, in one query; or None."""
    if session.get_bind().dialect.name == "postgresql":
        document = _PREFERENCES_DOCUMENT.scalar(session, external_id=external_id)
        if document is None:
            return None
        first = dict(zip(_DOCUMENT_NAMES, document[:-1], strict=True))
        if first["paused_until"] is not None:  # an instant in JSON: ISO 8601 text
            first["paused_until"] = dt.datetime.fromisoformat(first["paused_until"]).astimezone(
                dt.UTC
            )
        topics = [TopicChoice(*choice) for choice in document[-1]]
    else:
        rows = session.execute(_PREFERENCES, {"external_id": external_id}).all()
        if not rows:
            return None
        first = rows[0]._asdict()
        topics = [
            TopicChoice(
                r.topic_key, r.topic_regime, r.subscription_status, r.subscription_frequency
            )
            for r in rows
            if r.topic_key is not None
        ]
    return PreferencesShown(
        email=first["email"],
        phone=first["phone"],
        postal_address=postal_address(
            first["postal_line1"],
            first["postal_line2"],
            first["postal_code"],
            first["city"],
            first["country"],
        ),
        timezone=first["timezone"],
        consents={ch: status for ch in CHANNELS if (status := first[f"{ch}_status"]) is not None},
        topics=tuple(topics),
        has_preference=first["preference_of"] is not None,
        frequency=first["frequency"],
        channel_order=first["channel_order"],
        contact_start=first["contact_start"],
        contact_end=first["contact_end"],
        paused_until=first["paused_until"],
    )


def _collect(errors: list[InvalidField], field: str, exc: InvalidInput) -> None:
    for error in exc.errors:
        sub = error.field.split(".", 1)[1] if "." in error.field else ""
        pointer = f"{field}.{sub}" if sub else field
        errors.append(InvalidField(pointer, error.value, error.reason, error.code))


def upsert_customer(
    session: Session,
    external_id: str,
    fields: Mapping[str, Any],
    actor: Actor,
    *,
    cfg: ConsentSettings,
    now: dt.datetime,
) -> tuple[Customer, bool]:
    """Create or update a customer; fields given are set (None removes), others are kept.

    Returns (customer, created). InvalidInput lists every rejected field; the caller's
    transaction must then be rolled back.
    """
    errors: list[InvalidField] = []
    if "locale" in fields and fields["locale"] not in LOCALES:
        errors.append(
            InvalidField("locale", fields["locale"], f"is not one of {', '.join(LOCALES)}")
        )
    if errors:
        raise InvalidInput(errors)

    customer = get_customer(session, external_id)
    created = customer is None
    if customer is None:
        customer = Customer(
            external_id=external_id,
            locale=fields.get("locale") or "fr",
            timezone=cfg.default_timezone,
            attributes={},
        )
        session.add(customer)
        session.flush()
    for name in PROFILE_FIELDS:
        if name in fields:
            value = fields[name]
            setattr(customer, name, {} if name == "attributes" and value is None else value)
    for name, kind in ADDRESS_FIELDS.items():
        if name in fields:
            try:
                preferences.set_address(
                    session, customer, kind, fields[name], actor, cfg=cfg, now=now
                )
            except InvalidInput as exc:
                _collect(errors, name, exc)
    if "timezone" in fields:
        try:
            preferences.set_timezone(session, customer, fields["timezone"], actor, now=now)
        except InvalidInput as exc:
            _collect(errors, "timezone", exc)
    if errors:
        raise InvalidInput(errors)
    session.flush()
    return customer, created


def _encode_cursor(external_id: str) -> str:
    return base64.urlsafe_b64encode(external_id.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        return base64.b64decode(cursor + "=" * (-len(cursor) % 4), b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput.one("cursor", cursor, "is not a cursor from a previous page") from None


def list_customers(
    session: Session, *, cursor: str | None, limit: int
) -> tuple[list[Customer], str | None]:
    """A page of customers ordered by external id, and the cursor of the next page."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput.one("limit", limit, f"must be from 1 to {MAX_PAGE}")
    query = sa.select(Customer).where(Customer.external_id.is_not(None))
    if cursor:
        query = query.where(Customer.external_id > _decode_cursor(cursor))
    rows = list(session.scalars(query.order_by(Customer.external_id).limit(limit + 1)))
    page = rows[:limit]
    following = _encode_cursor(page[-1].external_id or "") if len(rows) > limit else None
    return page, following


# --- preference changes from the API ---------------------------------------------------------


def _minute(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


class _Errors:
    """Collects InvalidInput from several service calls, re-pointed at the request body."""

    def __init__(self) -> None:
        self.found: list[InvalidField] = []

    def run(self, pointer: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except InvalidInput as exc:
            for error in exc.errors:
                sub = error.field.split(".", 1)[1].replace(".", "/") if "." in error.field else ""
                where = f"{pointer}/{sub}" if sub else pointer
                self.found.append(InvalidField(where, error.value, error.reason, error.code))
            return None


def apply_preference_changes(
    session: Session,
    customer: Customer,
    change: Mapping[str, Any],
    topics: Mapping[str, Any],
    actor: Actor,
    *,
    cfg: ConsentSettings,
    secret: str,
    now: dt.datetime,
) -> list[preferences.Challenge]:
    """Apply a PATCH of the preferences shape through the preference services.

    Returns the double opt-ins started (for the caller to report; sending them is the
    campaign engine's job). InvalidInput names every rejected field by JSON pointer; the
    caller's transaction must then be rolled back.
    """
    errors = _Errors()
    challenges: list[preferences.Challenge] = []
    channels = change.get("channels") or {}
    # Addresses first: a consent is granted for the address the request also sets.
    for channel, wanted in channels.items():
        if "address" in wanted:
            kind = ADDRESS_KIND[channel]
            errors.run(
                f"/channels/{channel}/address",
                preferences.set_address,
                session,
                customer,
                kind,
                wanted["address"],
                actor,
                cfg=cfg,
                now=now,
            )
    for channel, wanted in channels.items():
        status = wanted.get("status")
        pointer = f"/channels/{channel}"
        proof = wanted.get("proof")
        if status == "refused":
            errors.run(pointer, preferences.refuse, session, customer, channel, actor, now=now)
        elif status == "granted" and (proof or not cfg.needs_confirmation(channel)):
            proof = proof or {"source": f"api:{actor.id}", "collected_at": now.isoformat()}
            errors.run(
                f"{pointer}/proof",
                preferences.grant_with_proof,
                session,
                customer,
                channel,
                actor,
                source=proof["source"],
                proof=proof,
                notice_text=proof.get("text"),
                cfg=cfg,
                now=now,
            )
        elif status in ("granted", "pending"):
            consent = preferences.consent_for(customer, channel)
            if status == "granted" and consent is not None and consent.status == "granted":
                continue
            challenge = errors.run(
                pointer,
                preferences.start_double_opt_in,
                session,
                customer,
                channel,
                actor,
                cfg=cfg,
                secret=secret,
                now=now,
            )
            if challenge is not None:
                challenges.append(challenge)
    for key, subscribed in (change.get("topics") or {}).items():
        topic = topics.get(key)
        if topic is None:
            errors.found.append(InvalidField(f"/topics/{key}", key, "is not a topic", "unknown"))
            continue
        errors.run(
            f"/topics/{key}",
            preferences.set_subscription,
            session,
            customer,
            topic,
            subscribed,
            actor,
            now=now,
        )
    if "frequency" in change:
        errors.run(
            "/frequency",
            preferences.set_frequency,
            session,
            customer,
            change["frequency"],
            actor,
            now=now,
        )
    for key, frequency in (change.get("topic_frequency") or {}).items():
        topic = topics.get(key)
        if topic is None:
            errors.found.append(
                InvalidField(f"/topic_frequency/{key}", key, "is not a topic", "unknown")
            )
            continue
        errors.run(
            f"/topic_frequency/{key}",
            preferences.set_topic_frequency,
            session,
            customer,
            topic,
            frequency,
            actor,
            now=now,
        )
    if "paused_until" in change:
        until = change["paused_until"]
        if until is None:
            errors.run("/paused_until", preferences.resume, session, customer, actor, now=now)
        else:
            errors.run(
                "/paused_until",
                preferences.pause,
                session,
                customer,
                dt.datetime.fromisoformat(until),
                actor,
                now=now,
            )
    if "contact_hours" in change:
        hours = change["contact_hours"]
        start, end = (_minute(hours["start"]), _minute(hours["end"])) if hours else (None, None)
        errors.run(
            "/contact_hours",
            preferences.set_contact_hours,
            session,
            customer,
            start,
            end,
            actor,
            now=now,
        )
    if "timezone" in change:
        errors.run(
            "/timezone",
            preferences.set_timezone,
            session,
            customer,
            change["timezone"],
            actor,
            now=now,
        )
    if "channel_order" in change:
        errors.run(
            "/channel_order",
            preferences.set_channel_order,
            session,
            customer,
            change["channel_order"],
            actor,
            now=now,
        )
    if errors.found:
        raise InvalidInput(errors.found)
    return challenges
