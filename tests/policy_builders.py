"""Builders for contact-policy tests: a customer who may be contacted, then one change."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from prefcenter.addresses import address_hmac
from prefcenter.consent_settings import ConsentSettings
from prefcenter.models import (
    ChannelConsent,
    ContactLogEntry,
    ContactPreference,
    Customer,
    Suppression,
    Topic,
    TopicSubscription,
)
from tests.factories import make_customer

KEY = b"policy-test-key-0123456789abcdef"


def settings(**overrides: Any) -> ConsentSettings:
    return ConsentSettings(address_key=KEY, **overrides)


def email_hmac(email: str) -> str:
    return address_hmac(KEY, "email", email)


def phone_hmac(phone: str) -> str:
    return address_hmac(KEY, "phone", phone)


def reachable_customer(
    session: Session,
    topic: Topic | None = None,
    *,
    channels: tuple[str, ...] = ("email", "sms", "phone", "post"),
    timezone: str = "Europe/Paris",
    hours: tuple[int | None, int | None] = (0, 1440),
    frequency: str = "any",
    order: str = "",
    **overrides: Any,
) -> Customer:
    """A customer with every address, confirmed and granted, subscribed to ``topic``."""
    n = uuid.uuid4().hex[:8]
    email = overrides.pop("email", f"c{n}@example.com")
    phone = overrides.pop("phone", "+33612345678")
    customer = make_customer(
        session,
        email=email,
        email_hmac=email_hmac(email) if email else None,
        phone=phone,
        phone_hmac=phone_hmac(phone) if phone else None,
        postal_line1="1 rue de la Paix",
        postal_code="75002",
        city="Paris",
        country="FR",
        timezone=timezone,
        **overrides,
    )
    for channel in channels:
        hmac = {"email": customer.email_hmac, "sms": customer.phone_hmac}.get(channel)
        session.add(
            ChannelConsent(
                customer_id=customer.id,
                channel=channel,
                status="granted",
                confirmed_hmac=hmac,
                mechanism="api_proof",
            )
        )
    session.add(
        ContactPreference(
            customer_id=customer.id,
            frequency=frequency,
            channel_order=order,
            contact_start=hours[0],
            contact_end=hours[1],
        )
    )
    if topic is not None:
        session.add(
            TopicSubscription(customer_id=customer.id, topic_id=topic.id, status="subscribed")
        )
    session.flush()
    return customer


def consent(session: Session, customer: Customer, channel: str) -> ChannelConsent:
    row = session.scalar(
        sa.select(ChannelConsent).where(
            ChannelConsent.customer_id == customer.id, ChannelConsent.channel == channel
        )
    )
    if row is None:
        row = ChannelConsent(customer_id=customer.id, channel=channel, status="pending")
        session.add(row)
    return row


def preference(session: Session, customer: Customer) -> ContactPreference:
    return session.get(ContactPreference, customer.id)


def log_contact(
    session: Session,
    customer: Customer,
    at: dt.datetime,
    *,
    channel: str = "email",
    topic: Topic | None = None,
    kind: str = "marketing",
    status: str = "sent",
    message_ref: str | None = None,
) -> ContactLogEntry:
    entry = ContactLogEntry(
        customer_id=customer.id,
        channel=channel,
        topic_id=topic.id if topic else None,
        kind=kind,
        at=at,
        status=status,
        message_ref=message_ref or f"test:{uuid.uuid4().hex}",
    )
    session.add(entry)
    session.flush()
    return entry


def suppress(session: Session, channel: str, hmac: str, reason: str = "manual") -> None:
    session.add(Suppression(channel=channel, address_hmac=hmac, reason=reason))
    session.flush()
