"""The ``mailto:`` half of List-Unsubscribe: mails sent to ``unsubscribe@<sender domain>``.

Every marketing email carries ``List-Unsubscribe: <https://…>, <mailto:unsubscribe@…?
subject=unsubscribe%20<delivery id>>``. A mailbox provider or a mail client that prefers
the mailto form sends a mail with that subject; SendGrid's Inbound Parse receives the
domain's mail and posts it to ``/webhooks/sendgrid/inbound``. The delivery id (random,
known only to the message's recipient and to us) says which customer and which topic:
that customer is unsubscribed from that topic through the preference services, so the
ledger records it with the customer as the actor, like the https link.

A mail that names no delivery, or one we do not know, changes nothing; it is answered
200 all the same (SendGrid would otherwise post it again for days).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import hmac
import re
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from prefcenter.errors import InvalidInput
from prefcenter.models import Customer, Topic
from prefcenter.services import preferences
from prefcenter.services.ledger import Actor

from .models import Campaign, Delivery

_WORD = "unsubscribe"
_DELIVERY = re.compile(
    rf"\b{_WORD}\s+([0-9a-f]{{8}}-?[0-9a-f]{{4}}-?[0-9a-f]{{4}}-?[0-9a-f]{{4}}-?[0-9a-f]{{12}})\b",
    re.IGNORECASE,
)


def mailto_subject(delivery_id: uuid.UUID) -> str:
    """The subject the mailto link asks for, as written in the URL (the space encoded):
    the one place that writes what :func:`delivery_id_in` reads back."""
    return f"{_WORD}%20{delivery_id}"


MECHANISM = "List-Unsubscribe mailto (SendGrid Inbound Parse)"


@dataclasses.dataclass(frozen=True)
class InboundSettings:
    secret: str | None  # the password of the Inbound Parse URL's basic auth

    @classmethod
    def from_settings(cls, settings: Any) -> InboundSettings:
        return cls(str(settings.get("sendgrid.inbound_parse_secret") or "").strip() or None)

    def allows(self, password: str | None) -> bool:
        if not self.secret or password is None:
            return False
        return hmac.compare_digest(password.encode(), self.secret.encode())


@dataclasses.dataclass(frozen=True)
class Outcome:
    unsubscribed: bool
    reason: str  # what happened, for SendGrid's log and ours (no personal data)
    topic: str | None = None


def subject_of(fields: Any) -> str:
    """The mail's subject from Inbound Parse's fields (parsed, or raw MIME in ``email``)."""
    subject = fields.get("subject")
    if subject:
        return str(subject)
    raw = fields.get("email")
    if raw:
        message = email.message_from_string(str(raw), policy=email.policy.default)
        return str(message.get("Subject") or "")
    return ""


def delivery_id_in(subject: str) -> uuid.UUID | None:
    match = _DELIVERY.search(subject)
    return uuid.UUID(match.group(1)) if match else None


def unsubscribe_by_mail(session: Session, subject: str, now: dt.datetime) -> Outcome:
    """Unsubscribe the recipient of the delivery the subject names from its campaign's topic."""
    delivery_id = delivery_id_in(subject)
    if delivery_id is None:
        return Outcome(False, "the subject names no delivery")
    row = session.execute(
        sa.select(Customer, Topic)
        .select_from(Delivery)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .join(Topic, Topic.id == Campaign.topic_id)
        .join(Customer, Customer.id == Delivery.customer_id)
        .where(Delivery.id == delivery_id, Delivery.channel == "email")
    ).first()
    if row is None:
        return Outcome(False, "no email delivery has that id")
    customer, topic = row
    actor = Actor.customer(customer.id, user_agent=MECHANISM)
    try:
        preferences.set_subscription(session, customer, topic, False, actor, now=now)
    except InvalidInput as exc:
        return Outcome(False, f"not unsubscribed: {exc.errors[0].reason}", topic.key)
    return Outcome(True, "unsubscribed from the campaign's topic", topic.key)
