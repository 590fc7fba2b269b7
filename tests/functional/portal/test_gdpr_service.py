"""services.gdpr: export everything, erase personal data but keep proof and suppressions."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from prefcenter.models import ConsentLedgerEntry, Interaction, LedgerIsAppendOnly, Suppression
from prefcenter.services import gdpr, preferences
from prefcenter.services.ledger import Actor
from tests.factories import make_customer, make_topic
from tests.policy_builders import settings

NOW = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)
SECRET = "gdpr-test-secret-" + "y" * 32


def _customer_with_history(dbsession):
    cfg = settings()
    topic = make_topic(dbsession, key="offers")
    customer = make_customer(dbsession, email=None)
    actor = Actor.customer(customer.id, ip="203.0.113.7", user_agent="Firefox/140")
    preferences.set_address(
        dbsession, customer, "email", "marie@example.com", actor, cfg=cfg, now=NOW
    )
    preferences.set_address(dbsession, customer, "phone", "+33612345678", actor, cfg=cfg, now=NOW)
    preferences.grant_from_form(
        dbsession, customer, "post", actor, notice_text="yes", cfg=cfg, secret=SECRET, now=NOW
    )
    preferences.set_subscription(dbsession, customer, topic, True, actor, now=NOW)
    dbsession.add(
        Interaction(
            customer_id=customer.id,
            kind="purchase",
            occurred_at=NOW,
            source="shop",
            idempotency_key="order-1",
            data={"amount": 42},
        )
    )
    dbsession.flush()
    return cfg, customer, actor


def test_export_holds_profile_preferences_consents_ledger_interactions(dbsession):
    _cfg, customer, _actor = _customer_with_history(dbsession)
    document = gdpr.export_customer(dbsession, customer)
    json.dumps(document)  # JSON-ready as it is
    assert document["profile"]["email"] == "marie@example.com"
    assert document["profile"]["phone"] == "+33612345678"
    assert [c["channel"] for c in document["consents"]] == ["post"]
    assert document["subscriptions"] == [
        {"topic": "offers", "status": "subscribed", "frequency": None}
    ]
    assert {e["field"] for e in document["ledger"]} >= {
        "address.email",
        "consent.post",
        "topic.offers",
    }
    assert document["ledger"][0]["ip"] == "203.0.113.7"
    assert document["interactions"][0]["data"] == {"amount": 42}
    assert document["messages"] == []


def test_erase_removes_personal_data_keeps_ledger_and_suppressions(dbsession):
    cfg, customer, actor = _customer_with_history(dbsession)
    email_hmac, phone_hmac = customer.email_hmac, customer.phone_hmac
    ledger_rows = len(gdpr.export_customer(dbsession, customer)["ledger"])

    result = gdpr.erase_customer(dbsession, customer, actor, cfg=cfg, now=NOW)

    assert not result.already_erased
    assert customer.erased_at == NOW
    assert (customer.email, customer.phone, customer.first_name, customer.postal_line1) == (
        None,
        None,
        None,
        None,
    )
    suppressed = set(
        dbsession.execute(sa.select(Suppression.channel, Suppression.address_hmac)).all()
    )
    assert {("email", email_hmac), ("sms", phone_hmac), ("phone", phone_hmac)} <= suppressed
    assert {c.channel: c.status for c in customer.consents} == dict.fromkeys(
        ("email", "sms", "phone", "post"), "refused"
    )
    rows = dbsession.scalars(
        sa.select(ConsentLedgerEntry).where(ConsentLedgerEntry.customer_id == customer.id)
    ).all()
    assert len(rows) > ledger_rows
    assert all(r.ip is None and r.user_agent is None for r in rows)
    assert "marie@example.com" not in json.dumps([r.before for r in rows] + [r.after for r in rows])
    assert dbsession.scalars(sa.select(Interaction)).all() == []
    # The ORM still refuses any other change of the ledger.
    rows[0].field = "tampered"
    with pytest.raises(LedgerIsAppendOnly):
        dbsession.flush()


def test_erase_twice_changes_nothing_the_second_time(dbsession):
    cfg, customer, actor = _customer_with_history(dbsession)
    gdpr.erase_customer(dbsession, customer, actor, cfg=cfg, now=NOW)
    count = dbsession.scalar(sa.select(sa.func.count()).select_from(ConsentLedgerEntry))
    again = gdpr.erase_customer(dbsession, customer, actor, cfg=cfg, now=NOW)
    assert again.already_erased
    assert dbsession.scalar(sa.select(sa.func.count()).select_from(ConsentLedgerEntry)) == count
