"""The demo campaigns: valid drafts, added once, ready to forecast."""

import datetime as dt

import sqlalchemy as sa

from campaigns import services
from campaigns.models import Campaign
from campaigns.seed import DEMO_CAMPAIGNS, seed_demo_campaigns
from tests.factories import make_topic
from tests.policy_builders import reachable_customer, settings


def test_demo_campaigns_are_added_once_and_can_be_forecast(dbsession):
    fashion = make_topic(dbsession, key="offers_fashion")
    make_topic(dbsession, key="newsletter")
    reachable_customer(dbsession, fashion)

    assert seed_demo_campaigns(dbsession) == len(DEMO_CAMPAIGNS)
    assert seed_demo_campaigns(dbsession) == 0

    campaigns = dbsession.scalars(sa.select(Campaign).order_by(Campaign.name)).all()
    assert {c.status for c in campaigns} == {"draft"}
    at = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
    sale = next(c for c in campaigns if c.name.startswith("Soldes"))
    forecast = services.forecast(dbsession, sale, at, services.Settings(settings()))
    assert forecast.channels == {"email": 1}
