"""Dispatch: due deliveries queued, the policy asked again at send time, sent exactly once."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from campaigns import dispatch
from campaigns.channels import Sent
from campaigns.channels.outbox import OutboxTransport
from campaigns.channels.sendgrid import SendGridTransport
from campaigns.models import Delivery, OutboxMessage
from prefcenter.errors import InvalidInput
from prefcenter.models import ContactLogEntry
from prefcenter.portal.links import read_unsubscribe_token
from tests.campaign_builders import make_campaign, planned
from tests.factories import make_topic
from tests.fakes.sendgrid import fake_sendgrid
from tests.policy_builders import consent, preference, reachable_customer, settings

AT = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)  # Monday 10:00 in Paris
SECRET = "dispatch-test-secret-0123456789-0123456789"
CFG = settings()
CONTENT = {
    "email": {
        "fr": {
            "subject": "Bonjour {{ first_name }}",
            "html": "<p>{{ first_name }}, {{ attributes.points }} points</p>",
            "text": "{{ first_name }} : {{ attributes.points }} points",
        },
        "en": {"subject": "Hello {{ first_name }}", "text": "Hi {{ first_name }}"},
    },
    "sms": {"fr": {"text": "Soldes ! {{ portal_url }}"}},
}


def dispatcher(transport=None) -> dispatch.Dispatcher:
    transport = transport or OutboxTransport()
    links = dispatch.Links(
        "https://prefs.example.com", SECRET, unsubscribe_mailto="unsubscribe@example.com"
    )
    return dispatch.Dispatcher(
        CFG, links, {ch: transport for ch in ("email", "sms", "phone", "post")}
    )


@pytest.fixture
def topic(dbsession):
    return make_topic(dbsession, key="offers")


def launched(session, topic, *customers, channels=("email", "sms"), kind="marketing"):
    campaign = make_campaign(session, topic, channels, kind, content=CONTENT, status="running")
    return planned(session, campaign, customers, AT, CFG)


def delivery_of(session, campaign, customer) -> Delivery:
    return session.scalars(
        sa.select(Delivery).where(
            Delivery.campaign_id == campaign.id, Delivery.customer_id == customer.id
        )
    ).one()


def reservation(session, campaign, customer) -> ContactLogEntry:
    return session.scalars(
        sa.select(ContactLogEntry).where(
            ContactLogEntry.message_ref == campaign.message_ref,
            ContactLogEntry.customer_id == customer.id,
        )
    ).one()


def test_a_due_delivery_is_rendered_in_the_customer_s_language_and_kept_in_the_outbox(
    dbsession, topic
):
    marie = reachable_customer(dbsession, topic, first_name="Marie", attributes={"points": 120})
    campaign = launched(dbsession, topic, marie)

    ids = dispatch.queue_due(dbsession, AT)
    result = dispatch.send_deliveries(dbsession, ids, AT, dispatcher())

    assert result.sent == 1
    delivery = delivery_of(dbsession, campaign, marie)
    assert (delivery.status, delivery.sent_at, delivery.attempts) == ("sent", AT, 1)
    message = dbsession.scalars(
        sa.select(OutboxMessage).where(OutboxMessage.delivery_id == delivery.id)
    ).one()
    assert (message.to_address, message.subject) == (marie.email, "Bonjour Marie")
    assert message.body_text == "Marie : 120 points"
    assert message.body_html == "<p>Marie, 120 points</p>"
    assert delivery.provider_message_id == f"outbox:{message.id}"
    assert reservation(dbsession, campaign, marie).status == "sent"


def test_every_email_carries_one_click_unsubscribe_headers_with_a_signed_link(dbsession, topic):
    customer = reachable_customer(dbsession, topic)
    campaign = launched(dbsession, topic, customer)

    dispatch.send_deliveries(dbsession, dispatch.queue_due(dbsession, AT), AT, dispatcher())

    delivery = delivery_of(dbsession, campaign, customer)
    headers = dbsession.scalars(
        sa.select(OutboxMessage.headers).where(OutboxMessage.delivery_id == delivery.id)
    ).one()
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = headers["List-Unsubscribe"].split(", ")
    assert mailto.startswith("<mailto:unsubscribe@example.com?subject=")
    token = https.strip("<>").rsplit("/u/", 1)[1]
    assert read_unsubscribe_token(SECRET, token, now=AT) == (customer.id, "offers")
    assert customer.email not in headers["List-Unsubscribe"]


def test_english_speakers_get_english_and_others_fall_back_to_the_first_locale(dbsession, topic):
    english = reachable_customer(dbsession, topic, first_name="Ann", locale="en")
    german = reachable_customer(dbsession, topic, first_name="Jan", locale="de")
    campaign = launched(dbsession, topic, english, german)

    dispatch.send_deliveries(dbsession, dispatch.queue_due(dbsession, AT), AT, dispatcher())

    subjects = dict(
        dbsession.execute(
            sa.select(Delivery.customer_id, OutboxMessage.subject)
            .join(OutboxMessage, OutboxMessage.delivery_id == Delivery.id)
            .where(Delivery.campaign_id == campaign.id)
        ).all()
    )
    assert subjects == {english.id: "Hello Ann", german.id: "Bonjour Jan"}


def test_marketing_sms_end_with_the_stop_mention(dbsession, topic):
    texter = reachable_customer(dbsession, topic, order="sms")
    campaign = launched(dbsession, topic, texter)

    dispatch.send_deliveries(dbsession, dispatch.queue_due(dbsession, AT), AT, dispatcher())

    delivery = delivery_of(dbsession, campaign, texter)
    text = dbsession.scalars(
        sa.select(OutboxMessage.body_text).where(OutboxMessage.delivery_id == delivery.id)
    ).one()
    first, stop = text.split("\n")
    assert first.startswith("Soldes ! https://prefs.example.com/p/")
    assert stop.startswith("STOP : https://prefs.example.com/u/")
    headers = dbsession.scalars(
        sa.select(OutboxMessage.headers).where(OutboxMessage.delivery_id == delivery.id)
    ).one()
    # Two long signed links: more than one 160-character segment, all in GSM-7.
    assert headers["X-SMS-Encoding"] == "GSM-7"
    assert int(headers["X-SMS-Segments"]) == -(-len(text) // 153)


def test_an_opt_out_between_planning_and_dispatch_stops_the_message(dbsession, topic):
    customer = reachable_customer(dbsession, topic)
    campaign = launched(dbsession, topic, customer)
    consent(dbsession, customer, "email").status = "refused"
    dbsession.flush()

    result = dispatch.send_deliveries(
        dbsession, dispatch.queue_due(dbsession, AT), AT, dispatcher()
    )

    delivery = delivery_of(dbsession, campaign, customer)
    assert (result.sent, result.skipped) == (0, 1)
    assert (delivery.status, delivery.reason) == ("skipped", "no_consent")
    assert reservation(dbsession, campaign, customer).status == "released"
    assert (
        dbsession.scalar(
            sa.select(sa.func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.delivery_id == delivery.id)
        )
        == 0
    )


def test_sending_the_same_ids_twice_sends_once(dbsession, topic):
    customer = reachable_customer(dbsession, topic)
    campaign = launched(dbsession, topic, customer)
    ids = dispatch.queue_due(dbsession, AT)

    first = dispatch.send_deliveries(dbsession, ids, AT, dispatcher())
    second = dispatch.send_deliveries(dbsession, ids, AT, dispatcher())

    assert (first.sent, second.sent) == (1, 0)
    delivery = delivery_of(dbsession, campaign, customer)
    assert delivery.attempts == 1
    assert dispatch.queue_due(dbsession, AT + dt.timedelta(hours=1)) == []


def test_a_deferred_delivery_waits_for_the_customer_s_window(dbsession, topic):
    # 09:00 UTC is 18:00 in Tokyo; this customer takes messages from 08:00 local.
    tokyo = reachable_customer(dbsession, topic, timezone="Asia/Tokyo", hours=(480, 720))
    campaign = launched(dbsession, topic, tokyo)
    opening = dt.datetime(2026, 3, 2, 23, 0, tzinfo=dt.UTC)

    assert dispatch.queue_due(dbsession, AT) == []
    assert dispatch.queue_due(dbsession, opening - dt.timedelta(seconds=1)) == []
    ids = dispatch.queue_due(dbsession, opening)
    result = dispatch.send_deliveries(dbsession, ids, opening, dispatcher())

    assert result.sent == 1
    assert delivery_of(dbsession, campaign, tokyo).sent_at == opening


def test_hours_changed_after_planning_defer_at_send_time(dbsession, topic):
    customer = reachable_customer(dbsession, topic)
    campaign = launched(dbsession, topic, customer)
    pref = preference(dbsession, customer)
    pref.contact_start, pref.contact_end = 18 * 60, 20 * 60  # Paris 18:00-20:00
    dbsession.flush()

    result = dispatch.send_deliveries(
        dbsession, dispatch.queue_due(dbsession, AT), AT, dispatcher()
    )

    delivery = delivery_of(dbsession, campaign, customer)
    evening = dt.datetime(2026, 3, 2, 17, 0, tzinfo=dt.UTC)
    assert result.deferred == 1
    assert (delivery.status, delivery.scheduled_at) == ("deferred", evening)
    assert reservation(dbsession, campaign, customer).at == evening


def test_a_paused_campaign_puts_its_queued_deliveries_back_in_line(dbsession, topic):
    customer = reachable_customer(dbsession, topic)
    campaign = launched(dbsession, topic, customer)
    ids = dispatch.queue_due(dbsession, AT)
    campaign.status = "paused"
    dbsession.flush()

    result = dispatch.send_deliveries(dbsession, ids, AT, dispatcher())

    assert (result.sent, result.requeued) == (0, 1)
    assert delivery_of(dbsession, campaign, customer).status == "planned"
    assert dispatch.queue_due(dbsession, AT) == []  # not while paused
    campaign.status = "running"
    dbsession.flush()
    assert dispatch.queue_due(dbsession, AT) == ids


def test_a_refusal_by_the_provider_fails_the_delivery_and_frees_the_cap(dbsession, topic):
    customer = reachable_customer(dbsession, topic)
    campaign = launched(dbsession, topic, customer)

    class Refusing:
        in_database = False

        def send(self, session, messages):
            return [Sent(m.delivery_id, error="invalid address") for m in messages]

    result = dispatch.send_deliveries(
        dbsession, dispatch.queue_due(dbsession, AT), AT, dispatcher(Refusing())
    )

    delivery = delivery_of(dbsession, campaign, customer)
    assert result.failed == 1
    assert (delivery.status, delivery.last_error) == ("failed", "invalid address")
    assert reservation(dbsession, campaign, customer).status == "released"


def test_deliveries_left_queued_too_long_are_handed_out_again(dbsession, topic):
    customer = reachable_customer(dbsession, topic)
    launched(dbsession, topic, customer)
    ids = dispatch.queue_due(dbsession, AT)

    assert (
        dispatch.requeue_stuck(
            dbsession, AT + dt.timedelta(minutes=5), older_than=dt.timedelta(minutes=10)
        )
        == []
    )
    later = AT + dt.timedelta(minutes=15)
    assert dispatch.requeue_stuck(dbsession, later, older_than=dt.timedelta(minutes=10)) == ids


def test_campaign_counts_break_skips_down_by_reason(dbsession, topic):
    sent = reachable_customer(dbsession, topic)
    unsubscribed = reachable_customer(dbsession)
    tokyo = reachable_customer(dbsession, topic, timezone="Asia/Tokyo", hours=(480, 720))
    campaign = launched(dbsession, topic, sent, unsubscribed, tokyo)
    dispatch.send_deliveries(dbsession, dispatch.queue_due(dbsession, AT), AT, dispatcher())

    counts = dispatch.campaign_counts(dbsession, campaign.id)

    assert counts == {
        "planned": 0,
        "queued": 0,
        "sending": 0,
        "sent": 1,
        "delivered": 0,
        "failed": 0,
        "deferred": 1,
        "cancelled": 0,
        "skipped": {"topic_unsubscribed": 1},
    }


def test_a_throttled_campaign_queues_no_more_than_its_rate_per_rolling_minute(dbsession, topic):
    people = [reachable_customer(dbsession, topic) for _ in range(5)]
    campaign = launched(dbsession, topic, *people)
    campaign.throttle_per_minute = 2
    dbsession.flush()

    first = dispatch.queue_due(dbsession, AT)
    again = dispatch.queue_due(dbsession, AT + dt.timedelta(seconds=30))
    next_minute = dispatch.queue_due(dbsession, AT + dt.timedelta(seconds=61))

    assert (len(first), len(again), len(next_minute)) == (2, 0, 2)
    assert not set(first) & set(next_minute)


def test_preview_renders_without_writing_and_test_send_reaches_only_the_given_address(
    dbsession, topic
):
    marie = reachable_customer(dbsession, topic, first_name="Marie", attributes={"points": 5})
    campaign = launched(dbsession, topic, marie)

    shown = dispatch.preview(dbsession, campaign, marie, "email", dispatcher().links, AT)
    sent = dispatch.test_send(
        dbsession, campaign, marie, "email", "marketer@example.com", dispatcher(), AT
    )

    assert (shown.to, shown.subject, shown.text) == (
        marie.email,
        "Bonjour Marie",
        "Marie : 5 points",
    )
    assert sent.ok
    test = dbsession.scalars(
        sa.select(OutboxMessage).where(OutboxMessage.to_address == "marketer@example.com")
    ).one()
    assert test.delivery_id is None and test.subject == "Bonjour Marie"
    # Neither touched the campaign's own delivery to Marie.
    assert delivery_of(dbsession, campaign, marie).status == "planned"
    with pytest.raises(InvalidInput) as excinfo:
        dispatch.preview(dbsession, campaign, marie, "post", dispatcher().links, AT)
    assert excinfo.value.errors[0].field == "channel"


def test_content_with_filters_or_conditions_is_rendered_for_each_customer(dbsession, topic):
    marie = reachable_customer(dbsession, topic, first_name="Marie")
    campaign = launched(dbsession, topic, marie)
    campaign.content = {
        "email": {
            "fr": {
                "subject": "{{ first_name | upper }}",
                "text": "{% if attributes.points %}points{% else %}aucun point{% endif %}",
            }
        }
    }
    dbsession.flush()

    dispatch.send_deliveries(dbsession, dispatch.queue_due(dbsession, AT), AT, dispatcher())

    message = dbsession.scalars(sa.select(OutboxMessage)).one()
    assert (message.subject, message.body_text) == ("MARIE", "aucun point")


def test_through_sendgrid_the_body_is_sent_once_and_each_customer_s_values_escaped_in_html(
    dbsession, topic
):
    names = ["Marie", "Tom & <Jerry>"]
    people = [reachable_customer(dbsession, topic, first_name=n, attributes={}) for n in names]
    launched(dbsession, topic, *people, channels=("email",))
    with fake_sendgrid() as fake:
        sendgrid = SendGridTransport("SG.test", "Maison <bonjour@example.com>", host=fake.url)
        result = dispatch.send_deliveries(
            dbsession, dispatch.queue_due(dbsession, AT), AT, dispatcher(sendgrid)
        )

    assert result.sent == 2
    (call,) = fake.calls
    html = call.body["content"][1]["value"]
    assert html.startswith("<p>") and "Tom" not in html and "Marie" not in html  # one body
    filled = {}
    for personalization in call.body["personalizations"]:
        text = html
        for key, value in personalization["substitutions"].items():
            text = text.replace(key, value)
        filled[personalization["subject"]] = text
    assert filled == {
        "Bonjour Marie": "<p>Marie,  points</p>",
        "Bonjour Tom & <Jerry>": "<p>Tom &amp; &lt;Jerry&gt;,  points</p>",
    }
