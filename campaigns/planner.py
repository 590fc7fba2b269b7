"""Audience -> deliveries, set-based, under the contact policy.

Planning a campaign is a handful of statements whatever the audience size (memory
stays flat: no customer is loaded into Python):

1. take the reservations lock (PostgreSQL; prefcenter.services.contacts) so that two
   campaigns planned at once run one after the other and can never together exceed a
   cap;
2. the policy's set-based form over the segment fills a staging table with one
   decision per candidate (``CREATE TABLE … AS``, which PostgreSQL runs with parallel
   workers, unlike ``INSERT … SELECT``);
3. from it, ``INSERT INTO deliveries`` one row per contacted customer, ``planned``
   (send now) or ``deferred`` (at the customer's next contact window), and
   ``INSERT INTO contact_log`` their reservations, which the caps of every later
   decision count (on PostgreSQL they reach ``policy_state`` in one pass over the
   staged rows: prefcenter.services.contacts.insert_staged_reservations);
4. the skipped candidates are counted per channel and reason into
   ``campaign_exclusions``: no row per skipped customer (they are most of a large
   audience); :func:`decision_for` tells why one given customer was left out.

:func:`forecast` runs the very same policy query and only counts, so a forecast
followed by a launch with nothing changed in between gives identical figures.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from prefcenter import policy
from prefcenter.consent_settings import ConsentSettings
from prefcenter.db import staged
from prefcenter.models import Customer, Topic, utcnow
from prefcenter.services.contacts import insert_staged_reservations, lock_reservations, new_id

from .models import Campaign, CampaignExclusion, Delivery


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

    Planning again decides only candidates who have no delivery yet (a segment that grew;
    a customer skipped before is decided again); the returned counts are those of every
    planning of the campaign.
    """
    message = message_for(session, campaign)
    lock_reservations(session)
    fresh = _not_planned_yet(campaign, candidates)
    now = utcnow()
    with (
        policy.audience(session, message, fresh, at, cfg=cfg) as audience,
        staged(session, audience.query) as decided,
    ):
        contacted = sa.select(decided).where(decided.c.decision != policy.SKIP).subquery()
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
                    new_id(session, contacted.c.customer_id),
                    sa.literal(campaign.id, sa.Uuid()),
                    contacted.c.customer_id,
                    contacted.c.channel,
                    sa.case((contacted.c.decision == policy.DEFER, "deferred"), else_="planned"),
                    contacted.c.reason,
                    contacted.c.contact_at,
                    sa.literal(0),
                    sa.literal(now, Delivery.created_at.type),
                    sa.literal(now, Delivery.updated_at.type),
                ).order_by(contacted.c.customer_id),  # index order, as for the reservations
            )
        )
        insert_staged_reservations(
            session,
            message,
            sa.select(contacted.c.customer_id, contacted.c.channel, contacted.c.contact_at),
            now,
        )
        skipped = session.execute(
            sa.select(decided.c.channel, decided.c.reason, sa.func.count())
            .where(decided.c.decision == policy.SKIP)
            .group_by(decided.c.channel, decided.c.reason)
        ).all()
    _add_exclusions(session, campaign, skipped)
    counts = delivery_plan_counts(session, campaign)
    campaign.plan_counts = counts.as_dict()
    campaign.planned_at = now
    return counts


def _add_exclusions(session: Session, campaign: Campaign, skipped: Any) -> None:
    if not skipped:
        return
    rows = {
        (row.channel, row.reason): row
        for row in session.scalars(
            sa.select(CampaignExclusion).where(CampaignExclusion.campaign_id == campaign.id)
        )
    }
    for channel, reason, n in skipped:
        row = rows.get((channel, reason))
        if row is None:
            session.add(
                CampaignExclusion(
                    campaign_id=campaign.id, channel=channel, reason=reason, customers=n
                )
            )
        else:
            row.customers += n
    session.flush()


def exclusion_counts(session: Session, campaign_id: uuid.UUID) -> dict[str, int]:
    """Candidates left out by planning, per policy reason."""
    rows = session.execute(
        sa.select(CampaignExclusion.reason, sa.func.sum(CampaignExclusion.customers))
        .where(CampaignExclusion.campaign_id == campaign_id)
        .group_by(CampaignExclusion.reason)
    ).all()
    return {reason: int(n) for reason, n in rows}


def decision_for(
    session: Session,
    campaign: Campaign,
    customer: Customer,
    at: dt.datetime,
    *,
    cfg: ConsentSettings,
) -> policy.Decision:
    """Why this customer gets the campaign or not: their delivery's status and reason if
    planning contacted them, else the policy's answer for them at ``at`` (planning keeps
    no row for a skipped customer; asked at the planning time, with nothing changed since,
    the policy gives planning's reason)."""
    delivery = session.scalars(
        sa.select(Delivery).where(
            Delivery.campaign_id == campaign.id, Delivery.customer_id == customer.id
        )
    ).one_or_none()
    if delivery is None:
        return policy.choose(session, customer, message_for(session, campaign), at, cfg=cfg)
    if delivery.status == "skipped":
        return policy.Decision(policy.SKIP, delivery.channel, delivery.reason)
    if delivery.status == "deferred":
        return policy.Decision(
            policy.DEFER, delivery.channel, delivery.reason, delivery.scheduled_at
        )
    return policy.Decision(policy.SEND, delivery.channel)


def delivery_plan_counts(session: Session, campaign: Campaign) -> PlanCounts:
    """The plan as the campaign's deliveries and exclusions record it now."""
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
    excluded = session.execute(
        sa.select(
            sa.literal(policy.SKIP),
            CampaignExclusion.channel,
            CampaignExclusion.reason,
            CampaignExclusion.customers,
        ).where(CampaignExclusion.campaign_id == campaign.id)
    ).all()
    return _counts([*rows, *excluded])
