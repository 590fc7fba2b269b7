"""What the portal shows on its pages, computed from the services and the policy.

Nothing here decides who gets what: :mod:`prefcenter.policy` chooses the channel and
:mod:`prefcenter.explanations` words its verdicts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .. import explanations, policy
from ..consent_settings import ADDRESS_KIND, ConsentSettings
from ..models import Customer, Topic
from ..models.vocabulary import CHANNELS
from ..services.preferences import consent_for
from ..services.suppressions import current_address_hmac


@dataclasses.dataclass(frozen=True)
class TopicOutlook:
    topic: Topic
    name: str
    description: str
    channel: str | None
    frequency: str
    receives: bool
    summary: str
    lines: list[explanations.Line]


def active_topics(session: Session) -> list[Topic]:
    return list(
        session.scalars(
            sa.select(Topic).where(Topic.active.is_(True)).order_by(Topic.kind, Topic.key)
        )
    )


def subscription_status(customer: Customer, topic: Topic) -> str | None:
    row = next((s for s in customer.subscriptions if s.topic_id == topic.id), None)
    return row.status if row else None


def topic_frequency(customer: Customer, topic: Topic) -> str | None:
    row = next((s for s in customer.subscriptions if s.topic_id == topic.id), None)
    return row.frequency if row else None


def receives_topic(customer: Customer, topic: Topic) -> bool:
    """Subscribed, or an opt-out topic the customer has not left."""
    status = subscription_status(customer, topic)
    return status == "subscribed" or (status is None and topic.regime == "opt_out")


def outlook(
    session: Session, customer: Customer, at: dt.datetime, *, cfg: ConsentSettings, locale: str
) -> list[TopicOutlook]:
    """For each active topic: the channel the policy would choose now, how often, and when."""
    overall = customer.preference.frequency if customer.preference else "any"
    result = []
    for topic in active_topics(session):
        message = policy.Message.for_topic(topic, CHANNELS)
        decision = policy.choose(session, customer, message, at, cfg=cfg)
        channel = decision.channel or cfg.default_channel_order[0]
        explained = explanations.explain(
            session, customer, channel, topic, topic.kind, at, cfg=cfg, locale=locale
        )
        # Alerts are not capped: they come when there is something to tell.
        frequency = (
            (topic_frequency(customer, topic) or overall) if topic.kind == "marketing" else "any"
        )
        result.append(
            TopicOutlook(
                topic=topic,
                name=topic.name(locale),
                description=(topic.descriptions or {}).get(locale)
                or (topic.descriptions or {}).get("fr")
                or "",
                channel=decision.channel if decision.contacts else None,
                frequency=frequency,
                receives=decision.contacts,
                summary=explained.summary,
                lines=explained.lines,
            )
        )
    return result


@dataclasses.dataclass(frozen=True)
class ChannelState:
    channel: str
    address_kind: str
    address: Any
    status: str  # granted | pending | refused | none
    regime: str
    needs_confirmation: bool
    code_pending: bool


def channel_states(customer: Customer, cfg: ConsentSettings) -> list[ChannelState]:
    states = []
    for channel in CHANNELS:
        consent = consent_for(customer, channel)
        kind = ADDRESS_KIND[channel]
        if kind == "email":
            address: Any = customer.email
        elif kind == "phone":
            address = customer.phone
        else:
            lines = [
                customer.postal_line1,
                customer.postal_line2,
                f"{customer.postal_code or ''} {customer.city or ''}".strip(),
                customer.country,
            ]
            address = [line for line in lines if line] or None
        status = consent.status if consent else "none"
        current = current_address_hmac(customer, kind, cfg)
        states.append(
            ChannelState(
                channel=channel,
                address_kind=kind,
                address=address,
                status=status,
                regime=cfg.regime(channel),
                needs_confirmation=cfg.needs_confirmation(channel),
                # A confirmation sent to the current address (one sent to a previous
                # address can no longer be used).
                code_pending=bool(
                    consent is not None
                    and consent.status == "pending"
                    and consent.confirmation_hash
                    and current is not None
                    and consent.confirmation_hash.startswith(current)
                ),
            )
        )
    return states
