"""Campaigns: creation validated field by field, and the launch / pause / resume / cancel cycle."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from campaigns import services
from campaigns.models import Campaign, Delivery
from prefcenter.errors import InvalidInput
from prefcenter.models import ContactLogEntry
from tests.factories import make_topic
from tests.policy_builders import reachable_customer, settings

AT = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
SETTINGS = services.Settings(settings())


def spec(**overrides):
    data = {
        "name": "Spring sale",
        "topic": "offers",
        "kind": "marketing",
        "channels": ["email"],
        "segment": {"all": []},
        "content": {"email": {"fr": {"subject": "Soldes", "text": "Bonjour {{ first_name }}"}}},
        "schedule": None,
        "throttle_per_minute": None,
    }
    data.update(overrides)
    return data


@pytest.fixture
def topic(dbsession):
    return make_topic(dbsession, key="offers")


def errors_of(excinfo) -> dict:
    return {e.field: (e.value, e.reason) for e in excinfo.value.errors}


def test_a_valid_campaign_is_created_as_a_draft(dbsession, topic):
    campaign = services.create_campaign(dbsession, spec(), created_by="api-key:abc")

    assert (campaign.status, campaign.topic_id, campaign.channels) == ("draft", topic.id, ["email"])
    assert campaign.created_by == "api-key:abc"


def test_every_bad_field_is_named_with_its_value_and_nothing_is_written(dbsession, topic):
    bad = spec(
        name="",
        topic="nope",
        channels=["email", "fax"],
        segment={"field": "locale", "op": "between", "value": "fr"},
        schedule={"at": "2026-03-02T10:00:00"},
        throttle_per_minute=0,
        colour="red",
    )

    with pytest.raises(InvalidInput) as excinfo:
        services.create_campaign(dbsession, bad)

    errors = errors_of(excinfo)
    assert set(errors) == {
        "/colour",
        "/name",
        "/topic",
        "/channels",
        "/segment/op",
        "/schedule/at",
        "/throttle_per_minute",
    }
    assert errors["/topic"] == ("nope", "is not an active topic")
    assert errors["/schedule/at"][1] == "needs a time zone (e.g. +01:00 or Z)"
    assert "between" in errors["/segment/op"][1]
    assert dbsession.scalar(sa.select(sa.func.count()).select_from(Campaign)) == 0


def test_content_is_required_for_each_channel_and_templates_must_parse(dbsession, topic):
    content = {
        "email": {"fr": {"subject": "Soldes", "text": "Bonjour {{ first_name "}},
        "sms": {"de": {"text": "Hallo"}},
    }

    with pytest.raises(InvalidInput) as excinfo:
        services.create_campaign(
            dbsession, spec(channels=["email", "sms", "post"], content=content)
        )

    errors = errors_of(excinfo)
    assert errors["/content/email/fr/text"][1].startswith("is not a valid template")
    assert errors["/content/sms/de"] == ("de", "is not one of fr, en")
    assert errors["/content/post"] == (None, "is missing: every allowed channel needs content")


def test_an_alert_campaign_needs_an_alert_topic(dbsession, topic):
    with pytest.raises(InvalidInput) as excinfo:
        services.create_campaign(dbsession, spec(kind="alert"))

    assert errors_of(excinfo)["/kind"] == (
        "alert",
        "topic 'offers' is a marketing topic, not an alert",
    )


def test_launch_plans_the_segment_and_runs(dbsession, topic):
    french = reachable_customer(dbsession, topic, locale="fr")
    english = reachable_customer(dbsession, topic, locale="en")
    campaign = services.create_campaign(
        dbsession,
        spec(segment={"all": [{"field": "locale", "op": "eq", "value": "fr"}]}),
    )

    forecast = services.forecast(dbsession, campaign, AT, SETTINGS)
    services.launch(dbsession, campaign, AT, SETTINGS)

    planned = set(
        dbsession.scalars(
            sa.select(Delivery.customer_id).where(Delivery.campaign_id == campaign.id)
        )
    )
    assert french.id in planned and english.id not in planned
    assert campaign.status == "running"
    assert campaign.plan_counts == forecast.as_dict()


def test_a_campaign_scheduled_later_waits_for_the_scheduler(dbsession, topic):
    reachable_customer(dbsession, topic)
    later = AT + dt.timedelta(hours=2)
    campaign = services.create_campaign(dbsession, spec(schedule={"at": later.isoformat()}))

    services.launch(dbsession, campaign, AT, SETTINGS)
    assert campaign.status == "scheduled"
    assert services.start_scheduled(dbsession, AT + dt.timedelta(hours=1), SETTINGS) == []
    started = services.start_scheduled(dbsession, later, SETTINGS)

    assert started == [campaign] and campaign.status == "running"
    assert campaign.planned_at is not None


def test_pause_resume_and_cancel_follow_the_status(dbsession, topic):
    customer = reachable_customer(dbsession, topic)
    campaign = services.create_campaign(dbsession, spec())

    with pytest.raises(services.WrongState):
        services.pause(dbsession, campaign)  # a draft is not running
    services.launch(dbsession, campaign, AT, SETTINGS)
    services.pause(dbsession, campaign)
    assert campaign.status == "paused"
    services.resume(dbsession, campaign)
    assert campaign.status == "running"
    services.cancel(dbsession, campaign, AT)

    delivery = dbsession.scalars(
        sa.select(Delivery).where(Delivery.customer_id == customer.id)
    ).one()
    reservation = dbsession.scalars(
        sa.select(ContactLogEntry).where(ContactLogEntry.message_ref == campaign.message_ref)
    ).one()
    assert (campaign.status, delivery.status, reservation.status) == (
        "cancelled",
        "cancelled",
        "released",
    )
    with pytest.raises(services.WrongState) as excinfo:
        services.launch(dbsession, campaign, AT, SETTINGS)
    assert str(excinfo.value) == (
        "cannot launch a campaign that is cancelled (only one that is draft or scheduled)"
    )
