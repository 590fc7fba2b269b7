"""The contact policy, rule by rule. Every case is checked in both forms:
the per-customer function and the set-based SQL must give the same answer."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from prefcenter import policy
from prefcenter.models import ChannelConsent, Customer, PressureRule, TopicSubscription
from tests.factories import make_topic
from tests.policy_builders import (
    consent,
    email_hmac,
    log_contact,
    phone_hmac,
    preference,
    reachable_customer,
    settings,
    suppress,
)

# A Monday at 10:00 in Paris (09:00 UTC).
AT = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
CFG = settings()


def set_based(session, message, customer, at=AT, cfg=CFG):
    candidates = sa.select(Customer.id).where(Customer.id == customer.id)
    with policy.audience(session, message, candidates, at, cfg=cfg) as audience:
        rows = session.execute(audience.query).all()
    assert len(rows) == 1
    row = rows[0]
    return policy.Decision(row.decision, row.channel, row.reason, row.until)


def both(session, customer, topic, channels=("email",), kind=None, at=AT, cfg=CFG, ref=None):
    """The decision, after asserting that both forms agree on it."""
    message = policy.Message.for_topic(topic, channels, kind, message_ref=ref)
    one = policy.choose(session, customer, message, at, cfg=cfg)
    many = set_based(session, message, customer, at, cfg)
    assert one == many
    if len(channels) == 1:
        assert (
            policy.decide(
                session, customer, channels[0], topic, message.kind, at, cfg=cfg, message_ref=ref
            )
            == one
        )
    return one


@pytest.fixture
def topic(dbsession):
    return make_topic(dbsession, key="offers", kind="marketing", regime="opt_in")


@pytest.fixture
def alert_topic(dbsession):
    return make_topic(dbsession, key="points", kind="alert", regime="opt_in")


@pytest.fixture
def customer(dbsession, topic):
    return reachable_customer(dbsession, topic)


def test_a_reachable_consenting_subscriber_is_sent(dbsession, customer, topic):
    assert both(dbsession, customer, topic) == policy.Decision("send", "email")


# -- 1. erased / suppressed


def test_erased_customer_is_skipped(dbsession, customer, topic):
    customer.erased_at = AT - dt.timedelta(days=1)
    assert both(dbsession, customer, topic) == policy.Decision("skip", "email", "erased")


@pytest.mark.parametrize("reason", ["hard_bounce", "spam_complaint", "erased", "manual"])
def test_suppressed_email_is_skipped(dbsession, customer, topic, reason):
    suppress(dbsession, "email", customer.email_hmac, reason)
    assert both(dbsession, customer, topic).reason == "suppressed"


def test_suppression_of_another_channel_does_not_matter(dbsession, customer, topic):
    suppress(dbsession, "sms", customer.phone_hmac)
    assert both(dbsession, customer, topic).decision == "send"


def test_phone_opposition_stops_marketing_calls_only(dbsession, topic, alert_topic):
    customer = reachable_customer(dbsession, topic)
    dbsession.add(
        TopicSubscription(customer_id=customer.id, topic_id=alert_topic.id, status="subscribed")
    )
    suppress(dbsession, "phone", customer.phone_hmac, "phone_opposition")
    assert both(dbsession, customer, topic, ("phone",)).reason == "suppressed"
    assert both(dbsession, customer, alert_topic, ("phone",)).decision == "send"
    assert both(dbsession, customer, topic, ("sms",)).decision == "send"


def test_erased_comes_before_suppressed(dbsession, customer, topic):
    customer.erased_at = AT
    suppress(dbsession, "email", customer.email_hmac)
    assert both(dbsession, customer, topic).reason == "erased"


# -- 2. unreachable


def test_no_email_address_is_unreachable(dbsession, customer, topic):
    customer.email = None
    customer.email_hmac = None
    assert both(dbsession, customer, topic).reason == "unreachable"


def test_unconfirmed_email_is_unreachable(dbsession, customer, topic):
    consent(dbsession, customer, "email").confirmed_hmac = None
    assert both(dbsession, customer, topic).reason == "unreachable"


def test_changed_email_is_unreachable_until_confirmed(dbsession, customer, topic):
    customer.email = "new@example.com"
    customer.email_hmac = email_hmac("new@example.com")
    assert both(dbsession, customer, topic).reason == "unreachable"


def test_post_needs_a_complete_address(dbsession, customer, topic):
    customer.city = None
    assert both(dbsession, customer, topic, ("post",)).reason == "unreachable"


def test_phone_needs_no_confirmation(dbsession, customer, topic):
    customer.phone = "+33698765432"
    customer.phone_hmac = phone_hmac("+33698765432")
    assert both(dbsession, customer, topic, ("phone",)).decision == "send"
    assert both(dbsession, customer, topic, ("sms",)).reason == "unreachable"


def test_suppressed_comes_before_unreachable(dbsession, customer, topic):
    consent(dbsession, customer, "email").confirmed_hmac = None
    suppress(dbsession, "email", customer.email_hmac)
    assert both(dbsession, customer, topic).reason == "suppressed"


# -- 3. no_consent


@pytest.mark.parametrize("status", ["pending", "refused"])
def test_opt_in_channel_needs_granted(dbsession, customer, topic, status):
    consent(dbsession, customer, "email").status = status
    assert both(dbsession, customer, topic).reason == "no_consent"


def test_opt_in_channel_without_any_consent_row(dbsession, topic):
    customer = reachable_customer(dbsession, topic, channels=("sms",))
    # No email consent row at all: unconfirmed, so rule 2 speaks first.
    assert both(dbsession, customer, topic).reason == "unreachable"


def test_opt_out_channels_are_allowed_until_refused(dbsession, topic):
    customer = reachable_customer(dbsession, topic, channels=())
    assert both(dbsession, customer, topic, ("phone",)).decision == "send"
    assert both(dbsession, customer, topic, ("post",)).decision == "send"
    consent(dbsession, customer, "post").status = "refused"
    assert both(dbsession, customer, topic, ("post",)).reason == "no_consent"


def test_regimes_are_settings(dbsession, topic):
    customer = reachable_customer(dbsession, topic, channels=())
    strict = settings(
        regimes={"email": "opt_in", "sms": "opt_in", "phone": "opt_in", "post": "opt_in"}
    )
    assert both(dbsession, customer, topic, ("post",), cfg=strict).reason == "no_consent"


def test_unreachable_comes_before_no_consent(dbsession, customer, topic):
    row = consent(dbsession, customer, "email")
    row.status = "refused"
    customer.email = None
    customer.email_hmac = None
    assert both(dbsession, customer, topic).reason == "unreachable"


# -- 4. topic_unsubscribed


def test_opt_in_topic_needs_subscription(dbsession, topic):
    customer = reachable_customer(dbsession, None)
    assert both(dbsession, customer, topic).reason == "topic_unsubscribed"


def test_opt_out_topic_allowed_until_unsubscribed(dbsession):
    topic = make_topic(dbsession, regime="opt_out")
    customer = reachable_customer(dbsession, None)
    assert both(dbsession, customer, topic).decision == "send"
    dbsession.add(
        TopicSubscription(customer_id=customer.id, topic_id=topic.id, status="unsubscribed")
    )
    dbsession.flush()
    assert both(dbsession, customer, topic).reason == "topic_unsubscribed"


def test_no_consent_comes_before_topic(dbsession, topic):
    customer = reachable_customer(dbsession, None)
    consent(dbsession, customer, "email").status = "refused"
    assert both(dbsession, customer, topic).reason == "no_consent"


# -- 5. paused


def test_paused_marketing_is_skipped(dbsession, customer, topic):
    preference(dbsession, customer).paused_until = AT + dt.timedelta(days=30)
    assert both(dbsession, customer, topic).reason == "paused"


def test_a_pause_in_the_past_is_over(dbsession, customer, topic):
    preference(dbsession, customer).paused_until = AT - dt.timedelta(seconds=1)
    assert both(dbsession, customer, topic).decision == "send"


def test_alerts_ignore_the_pause(dbsession, alert_topic):
    customer = reachable_customer(dbsession, alert_topic)
    preference(dbsession, customer).paused_until = AT + dt.timedelta(days=30)
    assert both(dbsession, customer, alert_topic).decision == "send"


def test_topic_comes_before_paused(dbsession, topic):
    customer = reachable_customer(dbsession, None)
    preference(dbsession, customer).paused_until = AT + dt.timedelta(days=30)
    assert both(dbsession, customer, topic).reason == "topic_unsubscribed"


# -- 6. frequency_cap


@pytest.mark.parametrize(
    ("frequency", "days_ago", "expected"),
    [
        ("weekly", 6, "frequency_cap"),
        ("weekly", 8, None),
        ("monthly", 29, "frequency_cap"),
        ("monthly", 31, None),
        ("any", 0.1, None),
    ],
)
def test_customer_cadence(dbsession, topic, frequency, days_ago, expected):
    customer = reachable_customer(dbsession, topic, frequency=frequency)
    log_contact(dbsession, customer, AT - dt.timedelta(days=days_ago), channel="sms")
    assert both(dbsession, customer, topic).reason == expected


def test_reserved_future_contacts_count_and_released_ones_do_not(dbsession, topic):
    customer = reachable_customer(dbsession, topic, frequency="weekly")
    entry = log_contact(dbsession, customer, AT + dt.timedelta(days=3), status="reserved")
    assert both(dbsession, customer, topic).reason == "frequency_cap"
    entry.status = "released"
    dbsession.flush()
    assert both(dbsession, customer, topic).decision == "send"


def test_alerts_do_not_count_toward_caps(dbsession, topic):
    customer = reachable_customer(dbsession, topic, frequency="weekly")
    log_contact(dbsession, customer, AT - dt.timedelta(days=1), kind="alert")
    assert both(dbsession, customer, topic).decision == "send"


def test_alerts_are_not_capped(dbsession, alert_topic):
    customer = reachable_customer(dbsession, alert_topic, frequency="weekly")
    log_contact(dbsession, customer, AT - dt.timedelta(days=1))
    assert both(dbsession, customer, alert_topic).decision == "send"


def test_a_message_does_not_cap_itself_at_send_time(dbsession, customer, topic):
    preference(dbsession, customer).frequency = "weekly"
    log_contact(dbsession, customer, AT, status="reserved", message_ref="campaign:1")
    assert both(dbsession, customer, topic, ref="campaign:1").decision == "send"
    assert both(dbsession, customer, topic, ref="campaign:2").reason == "frequency_cap"


def test_topic_cadence_only_counts_that_topic(dbsession, topic):
    other = make_topic(dbsession)
    customer = reachable_customer(dbsession, topic)
    subscription = dbsession.get(TopicSubscription, (customer.id, topic.id))
    subscription.frequency = "monthly"
    log_contact(dbsession, customer, AT - dt.timedelta(days=10), topic=other)
    assert both(dbsession, customer, topic).decision == "send"
    log_contact(dbsession, customer, AT - dt.timedelta(days=20), topic=topic)
    assert both(dbsession, customer, topic).reason == "frequency_cap"


def test_overall_and_topic_cadence_both_apply(dbsession, topic):
    other = make_topic(dbsession)
    customer = reachable_customer(dbsession, topic, frequency="weekly")
    dbsession.get(TopicSubscription, (customer.id, topic.id)).frequency = "any"
    log_contact(dbsession, customer, AT - dt.timedelta(days=2), topic=other)
    assert both(dbsession, customer, topic).reason == "frequency_cap"


def test_global_pressure_across_channels(dbsession, customer, topic):
    dbsession.add(PressureRule(channel=None, period_days=7, max_messages=2))
    log_contact(dbsession, customer, AT - dt.timedelta(days=1), channel="sms")
    assert both(dbsession, customer, topic).decision == "send"
    log_contact(dbsession, customer, AT - dt.timedelta(days=2), channel="post")
    assert both(dbsession, customer, topic).reason == "frequency_cap"


def test_global_pressure_per_channel(dbsession, customer, topic):
    dbsession.add(PressureRule(channel="sms", period_days=1, max_messages=1))
    log_contact(dbsession, customer, AT - dt.timedelta(hours=3), channel="sms")
    assert both(dbsession, customer, topic, ("sms",)).reason == "frequency_cap"
    assert both(dbsession, customer, topic, ("email",)).decision == "send"


def test_inactive_pressure_rules_do_not_apply(dbsession, customer, topic):
    dbsession.add(PressureRule(channel=None, period_days=7, max_messages=1, active=False))
    log_contact(dbsession, customer, AT - dt.timedelta(days=1))
    assert both(dbsession, customer, topic).decision == "send"


def test_paused_comes_before_frequency_cap(dbsession, topic):
    customer = reachable_customer(dbsession, topic, frequency="weekly")
    preference(dbsession, customer).paused_until = AT + dt.timedelta(days=1)
    log_contact(dbsession, customer, AT - dt.timedelta(days=1))
    assert both(dbsession, customer, topic).reason == "paused"


# -- 7. quiet hours


def test_outside_hours_defers_to_the_next_opening(dbsession, topic):
    # 10:00 in Paris, window 18:00-21:00 -> today 18:00 Paris = 17:00 UTC.
    customer = reachable_customer(dbsession, topic, hours=(18 * 60, 21 * 60))
    decision = both(dbsession, customer, topic)
    assert decision == policy.Decision(
        "defer", "email", "quiet_hours", dt.datetime(2026, 11, 23, 17, 0, tzinfo=dt.UTC)
    )


def test_after_the_window_defers_to_tomorrow(dbsession, topic):
    customer = reachable_customer(dbsession, topic, hours=(8 * 60, 9 * 60))
    assert both(dbsession, customer, topic).until == dt.datetime(2026, 11, 24, 7, tzinfo=dt.UTC)


def test_window_in_the_customer_timezone(dbsession, topic):
    # 09:00 UTC is 04:00 in New York: window 08:00-20:00 opens at 13:00 UTC.
    customer = reachable_customer(
        dbsession, topic, timezone="America/New_York", hours=(8 * 60, 20 * 60)
    )
    assert both(dbsession, customer, topic).until == dt.datetime(2026, 11, 23, 13, tzinfo=dt.UTC)


def test_default_window_from_settings(dbsession, topic):
    customer = reachable_customer(dbsession, topic, hours=(None, None))
    cfg = settings(default_contact_hours=(11 * 60, 12 * 60))
    assert both(dbsession, customer, topic, cfg=cfg).until == dt.datetime(
        2026, 11, 23, 10, tzinfo=dt.UTC
    )


def test_frequency_cap_comes_before_quiet_hours(dbsession, topic):
    customer = reachable_customer(dbsession, topic, frequency="weekly", hours=(20 * 60, 21 * 60))
    log_contact(dbsession, customer, AT - dt.timedelta(days=1))
    assert both(dbsession, customer, topic).reason == "frequency_cap"


def test_caps_are_checked_at_the_deferred_time(dbsession, topic):
    # Last message 6 days 20 hours ago: now is inside the week, tonight 20:00 is not.
    customer = reachable_customer(dbsession, topic, frequency="weekly", hours=(20 * 60, 21 * 60))
    log_contact(dbsession, customer, AT - dt.timedelta(days=6, hours=20))
    assert both(dbsession, customer, topic).decision == "defer"


def test_alerts_obey_quiet_hours(dbsession, alert_topic):
    customer = reachable_customer(dbsession, alert_topic, hours=(18 * 60, 21 * 60))
    assert both(dbsession, customer, alert_topic).decision == "defer"


# -- channel choice


def test_first_channel_of_the_customers_order_that_passes(dbsession, topic):
    customer = reachable_customer(dbsession, topic, order="sms,email")
    assert both(dbsession, customer, topic, ("email", "sms")).channel == "sms"
    consent(dbsession, customer, "sms").status = "refused"
    assert both(dbsession, customer, topic, ("email", "sms")).channel == "email"


def test_unlisted_channels_follow_in_default_order(dbsession, topic):
    customer = reachable_customer(dbsession, topic, order="post")
    assert both(dbsession, customer, topic, ("sms", "email", "post")).channel == "post"
    consent(dbsession, customer, "post").status = "refused"
    assert both(dbsession, customer, topic, ("sms", "email", "post")).channel == "email"


def test_skip_reason_is_the_first_choice_channels(dbsession, topic):
    customer = reachable_customer(dbsession, topic, order="sms,email")
    consent(dbsession, customer, "sms").status = "refused"
    consent(dbsession, customer, "email").status = "pending"
    customer.phone = None
    customer.phone_hmac = None
    decision = both(dbsession, customer, topic, ("email", "sms"))
    assert decision == policy.Decision("skip", "sms", "unreachable")


def test_quiet_hours_do_not_move_the_message_to_another_channel(dbsession, topic):
    customer = reachable_customer(dbsession, topic, order="email,sms", hours=(20 * 60, 21 * 60))
    decision = both(dbsession, customer, topic, ("email", "sms"))
    assert (decision.decision, decision.channel) == ("defer", "email")


def test_invalid_stored_order_means_default_order(dbsession, topic):
    customer = reachable_customer(dbsession, topic, order="fax,sms")
    assert both(dbsession, customer, topic, ("sms", "email")).channel == "email"


def test_set_based_form_covers_many_customers_at_once(dbsession, topic):
    sent = reachable_customer(dbsession, topic)
    erased = reachable_customer(dbsession, topic, erased_at=AT)
    unsubscribed = reachable_customer(dbsession, None)
    message = policy.Message.for_topic(topic, ("email",))
    ids = [sent.id, erased.id, unsubscribed.id]
    candidates = sa.select(Customer.id).where(Customer.id.in_(ids))
    with policy.audience(dbsession, message, candidates, AT, cfg=CFG) as audience:
        rows = {r.customer_id: (r.decision, r.reason) for r in dbsession.execute(audience.query)}
    assert rows == {
        sent.id: ("send", None),
        erased.id: ("skip", "erased"),
        unsubscribed.id: ("skip", "topic_unsubscribed"),
    }


def test_a_large_audience_agrees_too(dbsession, topic, monkeypatch):
    # Past a few thousand candidates the windows come from everybody's zones and hours.
    monkeypatch.setattr(policy, "_FEW_CANDIDATES", 0)
    customers = [
        reachable_customer(dbsession, topic, timezone="Asia/Tokyo", hours=(8 * 60, 9 * 60)),
        reachable_customer(dbsession, topic, timezone="America/New_York", order="post,sms"),
        reachable_customer(dbsession, topic, hours=(22 * 60, 8 * 60), frequency="weekly"),
    ]
    log_contact(dbsession, customers[2], AT - dt.timedelta(days=3))
    reachable_customer(dbsession, topic, timezone="Pacific/Chatham", hours=(61, 62))
    message = policy.Message.for_topic(topic, ("email", "sms", "post"))
    candidates = sa.select(Customer.id).where(Customer.id.in_([c.id for c in customers]))
    with policy.audience(dbsession, message, candidates, AT, cfg=CFG) as audience:
        rows = {r.customer_id: r for r in dbsession.execute(audience.query)}
    assert set(rows) == {c.id for c in customers}
    for customer in customers:
        row = rows[customer.id]
        got = policy.Decision(row.decision, row.channel, row.reason, row.until)
        assert got == policy.choose(dbsession, customer, message, AT, cfg=CFG)


def test_the_audience_leaves_the_transactions_settings_as_they_were(dbsession, topic):
    if dbsession.get_bind().dialect.name != "postgresql":
        pytest.skip("PostgreSQL settings")
    setting = sa.select(sa.func.current_setting("work_mem"), sa.func.current_setting("jit"))
    before = dbsession.execute(setting).one()
    customer = reachable_customer(dbsession, topic)
    message = policy.Message.for_topic(topic, ("email",))
    candidates = sa.select(Customer.id).where(Customer.id == customer.id)
    with policy.audience(dbsession, message, candidates, AT, cfg=CFG) as audience:
        assert dbsession.execute(setting).one() == ("128MB", "off")
        dbsession.execute(audience.query).all()
    assert dbsession.execute(setting).one() == before


def test_a_candidate_selected_twice_is_decided_once(dbsession, topic):
    customer = reachable_customer(dbsession, topic)
    dbsession.add(PressureRule(channel=None, period_days=7, max_messages=2))
    log_contact(dbsession, customer, AT - dt.timedelta(days=1))
    # One row per consent: the customer is selected four times.
    candidates = (
        sa.select(Customer.id)
        .join(ChannelConsent, ChannelConsent.customer_id == Customer.id)
        .where(Customer.id == customer.id)
    )
    message = policy.Message.for_topic(topic, ("email",))
    with policy.audience(dbsession, message, candidates, AT, cfg=CFG) as audience:
        rows = dbsession.execute(audience.query).all()
    assert [(r.decision, r.reason) for r in rows] == [("send", None)]
