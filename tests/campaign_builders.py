"""Builders for campaign-engine tests: a campaign on a topic, planned for given customers."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from campaigns import planner
from campaigns.models import Campaign
from prefcenter.consent_settings import ConsentSettings
from prefcenter.models import Customer, Topic


def make_campaign(
    session: Session,
    topic: Topic,
    channels: tuple[str, ...] = ("email", "sms"),
    kind: str = "marketing",
    **fields: Any,
) -> Campaign:
    values: dict[str, Any] = {
        "name": "Spring sale",
        "segment": {"all": []},
        "content": {},
        **fields,
    }
    campaign = Campaign(topic_id=topic.id, kind=kind, channels=list(channels), **values)
    session.add(campaign)
    session.flush()
    return campaign


def among(*customers: Customer) -> sa.Select:
    return sa.select(Customer.id).where(Customer.id.in_([c.id for c in customers]))


def planned(
    session: Session,
    campaign: Campaign,
    customers: tuple[Customer, ...],
    at: dt.datetime,
    cfg: ConsentSettings,
) -> Campaign:
    """The campaign planned for exactly these customers at ``at``."""
    planner.plan(session, campaign, among(*customers), at, cfg=cfg)
    return campaign
