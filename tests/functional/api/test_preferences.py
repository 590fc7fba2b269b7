"""Preferences: read, change any subset (with proof or double opt-in), decisions."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from prefcenter.models import ConsentLedgerEntry
from tests.factories import make_customer, make_topic

PROOF = {"source": "store-signup", "collected_at": "2026-01-10T10:00:00+01:00", "text": "Yes"}


def _ledger(dbsession, customer) -> list[tuple[str, str | None, str | None, str]]:
    dbsession.expire_all()
    return [
        (e.field, e.before, e.after, e.actor_type)
        for e in dbsession.scalars(
            sa.select(ConsentLedgerEntry)
            .where(ConsentLedgerEntry.customer_id == customer.id)
            .order_by(ConsentLedgerEntry.id)
        )
    ]


def test_get_preferences_of_a_new_customer(testapp, bearer, dbsession) -> None:
    make_customer(dbsession, external_id="P-1", email="p1@example.com")
    offers = make_topic(dbsession, key="offers_p1", regime="opt_in")
    news = make_topic(dbsession, key="news_p1", regime="opt_out")
    body = testapp.get("/api/v1/customers/P-1/preferences", headers=bearer("preferences:read")).json
    assert body["channels"]["email"] == {"status": "none", "address": "p1@example.com"}
    assert body["topics"][offers.key] is False
    assert body["topics"][news.key] is True
    assert body["frequency"] == "any"
    assert body["paused_until"] is None
    assert body["contact_hours"] == {"start": "09:00", "end": "20:00"}
    assert body["channel_order"] == ["email", "sms", "phone", "post"]


def test_patch_with_proof_grants_and_writes_the_ledger_with_the_key(
    testapp, bearer, dbsession
) -> None:
    customer = make_customer(dbsession, external_id="P-2", email="p2@example.com")
    offers = make_topic(dbsession, key="offers_p2")
    response = testapp.patch_json(
        "/api/v1/customers/P-2/preferences",
        {
            "channels": {"email": {"status": "granted", "proof": PROOF}},
            "topics": {offers.key: True},
            "frequency": "weekly",
            "topic_frequency": {offers.key: "monthly"},
            "contact_hours": {"start": "10:00", "end": "18:30"},
            "channel_order": ["sms", "email"],
            "timezone": "Europe/Brussels",
        },
        headers=bearer("preferences:write"),
    )
    body = response.json
    assert body["channels"]["email"]["status"] == "granted"
    assert body["topics"][offers.key] is True
    assert body["frequency"] == "weekly"
    assert body["topic_frequency"] == {offers.key: "monthly"}
    assert body["contact_hours"] == {"start": "10:00", "end": "18:30"}
    assert body["channel_order"] == ["sms", "email"]
    assert body["timezone"] == "Europe/Brussels"
    assert body["confirmations"] == []
    ledger = _ledger(dbsession, customer)
    assert ("consent.email", None, "granted", "api_key") in ledger
    assert {field for field, *_ in ledger} >= {
        "consent.email",
        f"topic.{offers.key}",
        "frequency",
        "contact_hours",
        "channel_order",
        "timezone",
    }
    proof_row = dbsession.scalar(
        sa.select(ConsentLedgerEntry).where(
            ConsentLedgerEntry.customer_id == customer.id,
            ConsentLedgerEntry.field == "consent.email",
        )
    )
    assert proof_row.details["proof"]["source"] == "store-signup"


def test_granting_email_without_proof_starts_a_double_opt_in(testapp, bearer, dbsession) -> None:
    make_customer(dbsession, external_id="P-3", email="p3@example.com")
    body = testapp.patch_json(
        "/api/v1/customers/P-3/preferences",
        {"channels": {"email": {"status": "granted"}}},
        headers=bearer("preferences:write"),
    ).json
    assert body["channels"]["email"]["status"] == "pending"
    assert [c["channel"] for c in body["confirmations"]] == ["email"]
    assert body["confirmations"][0]["status"] == "confirmation_sent"


def test_refusing_and_pausing(testapp, bearer, dbsession) -> None:
    make_customer(dbsession, external_id="P-4", email="p4@example.com")
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=10)).replace(microsecond=0)
    body = testapp.patch_json(
        "/api/v1/customers/P-4/preferences",
        {"channels": {"sms": {"status": "refused"}}, "paused_until": until.isoformat()},
        headers=bearer("preferences:write"),
    ).json
    assert body["channels"]["sms"]["status"] == "refused"
    assert dt.datetime.fromisoformat(body["paused_until"]) == until
    body = testapp.patch_json(
        "/api/v1/customers/P-4/preferences",
        {"paused_until": None},
        headers=bearer("preferences:write"),
    ).json
    assert body["paused_until"] is None


def test_a_rejected_patch_changes_nothing_neither_state_nor_ledger(
    testapp, bearer, dbsession
) -> None:
    customer = make_customer(dbsession, external_id="P-5", email="p5@example.com")
    offers = make_topic(dbsession, key="offers_p5")
    headers = bearer("preferences:write", "preferences:read")
    before = testapp.get("/api/v1/customers/P-5/preferences", headers=headers).json
    ledger_before = _ledger(dbsession, customer)
    # Valid changes first, then one the services reject: the whole request is undone.
    response = testapp.patch_json(
        "/api/v1/customers/P-5/preferences",
        {
            "channels": {
                "phone": {"status": "refused"},
                "email": {
                    "status": "granted",
                    "proof": {**PROOF, "collected_at": "2999-01-01T00:00:00Z"},
                },
            },
            "topics": {offers.key: True},
            "frequency": "monthly",
            "timezone": "Nowhere/Atlantis",
        },
        headers=headers,
        status=422,
    )
    assert response.content_type == "application/problem+json"
    pointers = {e["pointer"] for e in response.json["errors"]}
    assert pointers == {"/channels/email/proof/collected_at", "/timezone"}
    assert testapp.get("/api/v1/customers/P-5/preferences", headers=headers).json == before
    assert _ledger(dbsession, customer) == ledger_before


def test_unknown_topics_are_named(testapp, bearer, dbsession) -> None:
    make_customer(dbsession, external_id="P-6")
    response = testapp.patch_json(
        "/api/v1/customers/P-6/preferences",
        {"topics": {"no_such_topic": True}},
        headers=bearer("preferences:write"),
        status=422,
    )
    assert response.json["errors"][0]["pointer"] == "/topics/no_such_topic"


def test_decision_explains_every_rule(testapp, bearer, dbsession) -> None:
    make_customer(dbsession, external_id="P-7", email="p7@example.com", locale="en")
    offers = make_topic(dbsession, key="offers_p7")
    body = testapp.get(
        f"/api/v1/customers/P-7/decision?channel=email&topic={offers.key}&locale=en",
        headers=bearer("preferences:read"),
    ).json
    assert body["decision"] == "skip"
    assert body["reason"] == "unreachable"  # an email address nobody confirmed
    assert body["channel"] == "email"
    assert [line["rule"] for line in body["explanation"]][:2] == ["erased", "suppressed"]
    assert all(line["text"] for line in body["explanation"])


def test_decision_with_an_unknown_topic_or_channel_is_a_400(testapp, bearer, dbsession) -> None:
    make_customer(dbsession, external_id="P-8")
    headers = bearer("preferences:read")
    response = testapp.get(
        "/api/v1/customers/P-8/decision?channel=email&topic=nope", headers=headers, status=400
    )
    assert response.json["errors"][0]["parameter"] == "topic"
    response = testapp.get(
        "/api/v1/customers/P-8/decision?channel=fax&topic=nope", headers=headers, status=400
    )
    assert response.json["errors"][0]["parameter"] == "channel"


def test_get_shows_exactly_what_the_patch_answered(testapp, bearer, dbsession) -> None:
    make_customer(
        dbsession,
        external_id="P-9",
        email="p9@example.com",
        phone="+33612345609",
        postal_line1="1 rue de la Paix",
        postal_code="75002",
        city="Paris",
        country="FR",
    )
    offers = make_topic(dbsession, key="offers_p9")
    news = make_topic(dbsession, key="news_p9", regime="opt_out")
    make_topic(dbsession, key="alerts_p9", kind="alert", regime="opt_out")
    headers = bearer("preferences:write", "preferences:read")
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=5)).replace(microsecond=0)
    patched = testapp.patch_json(
        "/api/v1/customers/P-9/preferences",
        {
            "channels": {
                "email": {"status": "granted", "proof": PROOF},
                "sms": {"status": "refused"},
                "post": {"status": "granted", "proof": PROOF},
            },
            "topics": {offers.key: True, news.key: False},
            "frequency": "monthly",
            "topic_frequency": {offers.key: "weekly"},
            "contact_hours": {"start": "21:00", "end": "07:30"},
            "channel_order": ["post", "email"],
            "paused_until": until.isoformat(),
        },
        headers=headers,
    ).json
    read = testapp.get("/api/v1/customers/P-9/preferences", headers=headers).json
    assert patched.pop("confirmations") == []
    assert read == patched
    assert list(read["topics"]) == list(patched["topics"])  # same topic order too
    assert read["channels"]["post"]["address"]["city"] == "Paris"
    assert read["channels"]["phone"] == {"status": "none", "address": "+33612345609"}


def test_get_preferences_of_an_unknown_customer_is_a_404(testapp, bearer) -> None:
    response = testapp.get(
        "/api/v1/customers/P-NOBODY/preferences", headers=bearer("preferences:read"), status=404
    )
    assert "P-NOBODY" in response.json["detail"]
