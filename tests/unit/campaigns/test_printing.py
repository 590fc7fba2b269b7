"""Call list (call-backs first, each inside the customer's hours) and the print file."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

from campaigns import dispatch
from campaigns.channels.outbox import OutboxTransport
from campaigns.channels.printing import CallEntry, Letter, as_csv, as_json, call_list, print_file
from campaigns.models import Campaign
from prefcenter.models import CallbackRequest
from tests.campaign_builders import make_campaign, planned
from tests.factories import make_topic
from tests.policy_builders import reachable_customer, settings

AT = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)  # Monday 10:00 in Paris
CFG = settings()
LINKS = dispatch.Links("https://prefs.example.com", "printing-test-secret-0123456789-0123456789")
DISPATCHER = dispatch.Dispatcher(
    CFG, LINKS, {ch: OutboxTransport() for ch in ("email", "sms", "phone", "post")}
)
CONTENT = {
    "phone": {"fr": {"script": "Bonjour {{ first_name }}, nos soldes commencent."}},
    "post": {"fr": {"text": "Chère {{ first_name }}, nos soldes commencent."}},
}


def sent_campaign(session, topic, channel, *customers) -> Campaign:
    campaign = make_campaign(
        session, topic, (channel,), name=f"Soldes ({channel})", content=CONTENT, status="running"
    )
    planned(session, campaign, customers, AT, CFG)
    dispatch.send_deliveries(session, dispatch.queue_due(session, AT), AT, DISPATCHER)
    return campaign


def test_call_backs_come_first_then_campaign_calls_inside_the_customer_s_hours(dbsession):
    topic = make_topic(dbsession, key="offers")
    evening = reachable_customer(
        dbsession, topic, first_name="Léa", hours=(540, 1200), timezone="Europe/Paris"
    )
    caller = reachable_customer(dbsession, topic, first_name="Paul")
    dbsession.add(
        CallbackRequest(
            customer_id=caller.id,
            day=dt.date(2026, 3, 2),
            slot_start=14 * 60,
            slot_end=15 * 60,
            timezone="Europe/Paris",
            phone=caller.phone,
            topic_key="offers",
            note="Question about my order",
        )
    )
    sent_campaign(dbsession, topic, "phone", evening)

    entries = call_list(dbsession, dt.date(2026, 3, 2), CFG)

    assert [(e.kind, e.name.split()[0]) for e in entries] == [
        ("callback", "Paul"),
        ("campaign", "Léa"),
    ]
    callback, call = entries
    assert (callback.local_window, callback.starts_at) == (
        "14:00-15:00",
        dt.datetime(2026, 3, 2, 13, 0, tzinfo=dt.UTC),
    )
    assert call.local_window == "09:00-20:00"
    assert (call.starts_at, call.ends_at) == (
        dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 2, 19, 0, tzinfo=dt.UTC),
    )
    assert call.script == "Bonjour Léa, nos soldes commencent."
    assert call_list(dbsession, dt.date(2026, 3, 3), CFG) == []

    rows = list(csv.DictReader(io.StringIO(as_csv(entries, CallEntry))))
    assert rows[1]["phone"] == evening.phone and rows[1]["kind"] == "campaign"
    assert json.loads(as_json(entries))[0]["starts_at"] == "2026-03-02T13:00:00+00:00"


def test_the_print_file_holds_each_letter_with_its_address(dbsession):
    topic = make_topic(dbsession, key="offers")
    reader = reachable_customer(dbsession, topic, first_name="Anne", order="post")
    unsubscribed = reachable_customer(dbsession, first_name="Nope")  # not subscribed: no letter
    campaign = sent_campaign(dbsession, topic, "post", reader, unsubscribed)

    letters = print_file(dbsession, campaign.id)

    assert letters == [
        Letter(
            reader.external_id,
            "Anne Martin",
            "1 rue de la Paix",
            None,
            "75002",
            "Paris",
            "FR",
            "Chère Anne, nos soldes commencent.",
        )
    ]
    (row,) = csv.DictReader(io.StringIO(as_csv(letters, Letter)))
    assert (row["postal_code"], row["city"], row["text"]) == (
        "75002",
        "Paris",
        "Chère Anne, nos soldes commencent.",
    )
