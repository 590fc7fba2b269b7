"""Audience -> deliveries, set-based, under the contact policy.

Planning a campaign is three statements whatever the audience size (memory stays
flat: no customer is loaded into Python):

1. lock the candidates' rows (PostgreSQL) so that two campaigns planned at once
   serialize per customer and can never together exceed a cap;
2. ``INSERT INTO deliveries … SELECT`` from the policy's set-based form over the
   segment: one row per candidate, ``planned`` (send now), ``deferred`` (at the
   customer's next contact window) or ``skipped`` with the policy's reason;
3. ``INSERT INTO contact_log … SELECT`` the reservations of the planned and
   deferred rows, which the caps of every later decision count.

:func:`forecast` runs the very same policy query and only counts, so a forecast
followed by a launch with nothing changed in between gives identical figures.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from prefcenter import policy
from prefcenter.consent_settings import ConsentSettings
from prefcenter.models import ContactLogEntry, Topic, utcnow
from prefcenter.services.contacts import insert_reservations, lock_customers, new_id

from .models import Campaign, Delivery

_STATUS_OF = {policy.SEND: "planned", policy.DEFER: "deferred", policy.SKIP: "skipped"}


@dataclasses.dataclass(frozen=True)
class PlanCounts:
    """What a plan (or a forecast) gives: who is contacted on which channel, who is not, why."""

    channels: dict[str, int]  # contacted now or later, per chosen channel
    deferred: int  # of which wait for their contact window
    skipped: dict[str, int]  # per policy reason

    @property
    def contacted(self) -> int:
        return sum(self.channels.values())

    @property
    def audience(self) -> int:
        return self.contacted + sum(self.skipped.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "audience": self.audience,
            "contacted": self.contacted,
            "channels": dict(sorted(self.channels.items())),
            "deferred": self.deferred,
            "skipped": dict(sorted(self.skipped.items())),
        }


def message_for(session: Session, campaign: Campaign) -> policy.Message:
    topic = session.get_one(Topic, campaign.topic_id)
    return policy.Message.for_topic(
        topic, campaign.channels, campaign.kind, message_ref=campaign.message_ref
    )


def _counts(rows: Any) -> PlanCounts:
    channels: dict[str, int] = {}
    skipped: dict[str, int] = {}
    deferred = 0
    for decision, channel, reason, n in rows:
        if decision == policy.SKIP:
            skipped[reason] = skipped.get(reason, 0) + n
            continue
        channels[channel] = channels.get(channel, 0) + n
        if decision == policy.DEFER:
            deferred += n
    return PlanCounts(channels, deferred, skipped)


def _not_planned_yet(campaign: Campaign, candidates: sa.Select) -> sa.Select:
    planned = sa.select(Delivery.customer_id).where(Delivery.campaign_id == campaign.id)
    return candidates.where(candidates.selected_columns[0].not_in(planned))


def forecast(
    session: Session,
    campaign: Campaign,
    candidates: sa.Select,
    at: dt.datetime,
    *,
    cfg: ConsentSettings,
) -> PlanCounts:
    """The counts :func:`plan` would produce at ``at``; reserves and writes nothing."""
    message = message_for(session, campaign)
    with policy.audience(
        session, message, _not_planned_yet(campaign, candidates), at, cfg=cfg
    ) as audience:
        decided = audience.query.subquery("decided")
        rows = session.execute(
            sa.select(
                decided.c.decision, decided.c.channel, decided.c.reason, sa.func.count()
            ).group_by(decided.c.decision, decided.c.channel, decided.c.reason)
        ).all()
    return _counts(rows)


def plan(
    session: Session,
    campaign: Campaign,
    candidates: sa.Select,
    at: dt.datetime,
    *,
    cfg: ConsentSettings,
) -> PlanCounts:
    """Write the campaign's deliveries and reserve their contacts, in the caller's transaction.

    Planning again adds only candidates who have no delivery yet (a segment that grew);
    the returned counts are those of every delivery of the campaign.
    """
    message = message_for(session, campaign)
    fresh = _not_planned_yet(campaign, candidates)
    lock_customers(session, fresh)
    now = utcnow()
    with policy.audience(session, message, fresh, at, cfg=cfg) as audience:
        decided = audience.query.subquery("decided")
        status = sa.case(
            *((decided.c.decision == d, status) for d, status in _STATUS_OF.items()),
        )
        session.execute(
            sa.insert(Delivery).from_select(
                [
                    "id",
                    "campaign_id",
                    "customer_id",
                    "channel",
                    "status",
                    "reason",
                    "scheduled_at",
                    "attempts",
                    "created_at",
                    "updated_at",
                ],
                sa.select(
                    new_id(session),
                    sa.literal(campaign.id, sa.Uuid()),
                    decided.c.customer_id,
                    decided.c.channel,
                    status,
                    decided.c.reason,
                    decided.c.contact_at,
                    sa.literal(0),
                    sa.literal(now, Delivery.created_at.type),
                    sa.literal(now, Delivery.updated_at.type),
                ),
            )
        )
    _reserve(session, campaign, message, now)
    counts = delivery_plan_counts(session, campaign)
    campaign.plan_counts = counts.as_dict()
    campaign.planned_at = now
    return counts


def _reserve(
    session: Session, campaign: Campaign, message: policy.Message, now: dt.datetime
) -> None:
    reserved = sa.select(ContactLogEntry.customer_id).where(
        ContactLogEntry.message_ref == message.message_ref
    )
    insert_reservations(
        session,
        message,
        sa.select(Delivery.customer_id, Delivery.channel, Delivery.scheduled_at).where(
            Delivery.campaign_id == campaign.id,
            Delivery.status.in_(("planned", "deferred")),
            Delivery.customer_id.not_in(reserved),
        ),
        now,
    )


def delivery_plan_counts(session: Session, campaign: Campaign) -> PlanCounts:
    """The plan as the campaign's deliveries record it now (one GROUP BY)."""
    decision = sa.case(
        (Delivery.status == "skipped", policy.SKIP),
        (Delivery.reason == policy.QUIET_HOURS, policy.DEFER),
        else_=policy.SEND,
    )
    rows = session.execute(
        sa.select(decision, Delivery.channel, Delivery.reason, sa.func.count())
        .where(Delivery.campaign_id == campaign.id, Delivery.status != "cancelled")
        .group_by(decision, Delivery.channel, Delivery.reason)
    ).all()
    return _counts(rows)
