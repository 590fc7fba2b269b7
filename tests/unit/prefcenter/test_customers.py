"""Reading a customer's preferences in one query gives what the loaded customer shows."""

from __future__ import annotations

import datetime as dt

from prefcenter.models import ChannelConsent, ContactPreference, TopicSubscription
from prefcenter.services import customers, topics
from tests.factories import make_customer, make_topic


def test_read_preferences_matches_the_loaded_customer(dbsession) -> None:
    customer = make_customer(dbsession, phone="+33612345678", city="Lyon")
    weekly = make_topic(dbsession, key="a_offers")
    unsubscribed = make_topic(dbsession, key="b_news")
    make_topic(dbsession, key="c_alerts", kind="alert", regime="opt_out")
    dbsession.add_all(
        [
            ChannelConsent(customer_id=customer.id, channel="email", status="granted"),
            ChannelConsent(customer_id=customer.id, channel="sms", status="refused"),
            ContactPreference(
                customer_id=customer.id,
                frequency="weekly",
                channel_order="sms,email",
                contact_start=600,
                contact_end=1080,
                paused_until=dt.datetime(2026, 5, 1, tzinfo=dt.UTC),
            ),
            TopicSubscription(
                customer_id=customer.id, topic_id=weekly.id, status="subscribed", frequency="weekly"
            ),
            TopicSubscription(
                customer_id=customer.id, topic_id=unsubscribed.id, status="unsubscribed"
            ),
        ]
    )
    dbsession.flush()
    dbsession.expire_all()

    read = customers.read_preferences(dbsession, customer.external_id)

    loaded = customers.get_customer(dbsession, customer.external_id, with_preferences=True)
    assert read == customers.preferences_shown(loaded, topics.list_topics(dbsession))
    assert read.consents == {"email": "granted", "sms": "refused"}
    assert [(t.key, t.status, t.frequency) for t in read.topics] == [
        ("a_offers", "subscribed", "weekly"),
        ("b_news", "unsubscribed", None),
        ("c_alerts", None, None),
    ]
    assert read.postal_address == {
        "line1": None,
        "line2": None,
        "postal_code": None,
        "city": "Lyon",
        "country": None,
    }


def test_read_preferences_of_a_customer_without_choices(dbsession) -> None:
    customer = make_customer(dbsession)
    make_topic(dbsession)

    read = customers.read_preferences(dbsession, customer.external_id)

    loaded = customers.get_customer(dbsession, customer.external_id, with_preferences=True)
    assert read == customers.preferences_shown(loaded, topics.list_topics(dbsession))
    assert (read.has_preference, read.consents, read.postal_address) == (False, {}, None)


def test_read_preferences_of_nobody_is_none(dbsession) -> None:
    assert customers.read_preferences(dbsession, "NOBODY") is None
