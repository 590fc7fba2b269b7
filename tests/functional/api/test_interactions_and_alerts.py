"""Interactions (idempotent, set-based batches) and alerts through the policy."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from prefcenter.models import ContactLogEntry, Customer, Interaction
from prefcenter.services import preferences
from prefcenter.services.ledger import Actor
from tests.factories import make_customer, make_topic


def _item(external_id: str, key: str, when: str = "2026-03-01T10:00:00Z", **extra) -> dict:
    return {
        "external_id": external_id,
        "kind": "purchase",
        "occurred_at": when,
        "idempotency_key": key,
        "data": {"amount": 42.5},
        **extra,
    }


def test_a_batch_reports_each_item_and_a_replay_changes_nothing(testapp, bearer, dbsession) -> None:
    alice = make_customer(dbsession, external_id="I-ALICE")
    bob = make_customer(dbsession, external_id="I-BOB")
    headers = bearer("interactions:write")
    batch = {
        "interactions": [
            _item("I-ALICE", "k1", "2026-03-01T10:00:00Z"),
            _item("I-ALICE", "k2", "2026-03-05T10:00:00+01:00"),
            _item("I-BOB", "k3", "2026-02-01T08:00:00Z"),
            _item("I-NOBODY", "k4"),
            _item("I-BOB", "k1"),  # same key again in the batch
        ]
    }
    body = testapp.post_json("/api/v1/interactions", batch, headers=headers).json
    assert [r["status"] for r in body["results"]] == [
        "created",
        "created",
        "created",
        "unknown_customer",
        "duplicate",
    ]
    assert (body["created"], body["duplicates"], body["unknown_customers"]) == (3, 1, 1)
    dbsession.expire_all()
    assert dbsession.get(Customer, alice.id).last_interaction_at == dt.datetime(
        2026, 3, 5, 9, 0, tzinfo=dt.UTC
    )
    assert dbsession.get(Customer, bob.id).last_interaction_at == dt.datetime(
        2026, 2, 1, 8, 0, tzinfo=dt.UTC
    )

    replay = testapp.post_json("/api/v1/interactions", batch, headers=headers).json
    assert [r["status"] for r in replay["results"]] == [
        "duplicate",
        "duplicate",
        "duplicate",
        "unknown_customer",
        "duplicate",
    ]
    count = dbsession.scalar(
        sa.select(sa.func.count())
        .select_from(Interaction)
        .where(Interaction.customer_id.in_([alice.id, bob.id]))
    )
    assert count == 3


def test_an_older_interaction_does_not_move_last_interaction_back(
    testapp, bearer, dbsession
) -> None:
    carol = make_customer(dbsession, external_id="I-CAROL")
    headers = bearer("interactions:write")
    testapp.post_json(
        "/api/v1/interactions",
        {"interactions": [_item("I-CAROL", "c1", "2026-04-01T00:00:00Z")]},
        headers=headers,
    )
    testapp.post_json(
        "/api/v1/interactions",
        {"interactions": [_item("I-CAROL", "c2", "2026-01-01T00:00:00Z")]},
        headers=headers,
    )
    dbsession.expire_all()
    assert dbsession.get(Customer, carol.id).last_interaction_at == dt.datetime(
        2026, 4, 1, tzinfo=dt.UTC
    )


def test_more_than_1000_items_or_a_bad_item_is_rejected_whole(testapp, bearer, dbsession) -> None:
    make_customer(dbsession, external_id="I-DAN")
    headers = bearer("interactions:write")
    too_many = {"interactions": [_item("I-DAN", f"d{n}") for n in range(1001)]}
    response = testapp.post_json("/api/v1/interactions", too_many, headers=headers, status=422)
    assert response.json["errors"][0]["pointer"] == "/interactions"
    bad = {"interactions": [_item("I-DAN", "d1"), _item("I-DAN", "d2", kind="teleport")]}
    response = testapp.post_json("/api/v1/interactions", bad, headers=headers, status=422)
    assert response.json["errors"][0]["pointer"] == "/interactions/1/kind"
    assert dbsession.scalar(sa.select(sa.func.count()).select_from(Interaction)) == 0


def test_1000_items_in_one_batch(testapp, bearer, dbsession) -> None:
    make_customer(dbsession, external_id="I-EVE")
    batch = {"interactions": [_item("I-EVE", f"e{n}") for n in range(1000)]}
    body = testapp.post_json("/api/v1/interactions", batch, headers=bearer("interactions:write"))
    assert body.json["created"] == 1000


def _granted_sms_customer(dbsession, external_id: str):
    customer = make_customer(dbsession, external_id=external_id)
    cfg = _cfg()
    actor = Actor.system("test")
    preferences.set_address(dbsession, customer, "phone", "+33612345678", actor, cfg=cfg)
    preferences.grant_with_proof(
        dbsession,
        customer,
        "sms",
        Actor.system("test"),
        source="test",
        proof={"source": "test", "collected_at": "2026-01-01T00:00:00Z"},
        cfg=cfg,
    )
    return customer


def _cfg():
    from prefcenter.consent_settings import ConsentSettings
    from tests.conftest import app_settings

    return ConsentSettings.from_settings(app_settings())


def test_an_alert_is_decided_by_the_policy_and_reserved(testapp, bearer, dbsession) -> None:
    customer = _granted_sms_customer(dbsession, "A-1")
    topic = make_topic(dbsession, key="points_expiring", kind="alert", regime="opt_out")
    body = testapp.post_json(
        "/api/v1/alerts",
        {
            "external_id": "A-1",
            "topic": topic.key,
            "channels": ["sms"],
            "text": "Your 1,200 points expire on 31 March.",
        },
        headers=bearer("alerts:send"),
    ).json
    assert body["decision"] in ("send", "defer"), body
    assert body["channel"] == "sms"
    assert body["text"] == "Your 1,200 points expire on 31 March."
    reserved = dbsession.scalar(
        sa.select(ContactLogEntry).where(ContactLogEntry.customer_id == customer.id)
    )
    assert reserved.message_ref == f"alert:{body['alert_id']}"
    assert reserved.kind == "alert"


def test_an_alert_the_policy_refuses_reserves_nothing(testapp, bearer, dbsession) -> None:
    customer = make_customer(dbsession, external_id="A-2", email=None, phone=None)
    topic = make_topic(dbsession, key="points_expiring_2", kind="alert", regime="opt_out")
    body = testapp.post_json(
        "/api/v1/alerts",
        {"external_id": "A-2", "topic": topic.key, "text": "Hello"},
        headers=bearer("alerts:send"),
    ).json
    assert body["decision"] == "skip"
    assert body["reason"]
    assert (
        dbsession.scalar(
            sa.select(ContactLogEntry).where(ContactLogEntry.customer_id == customer.id)
        )
        is None
    )


def test_an_alert_on_a_marketing_topic_or_unknown_customer_is_rejected(
    testapp, bearer, dbsession
) -> None:
    topic = make_topic(dbsession, key="offers_a3", kind="marketing")
    response = testapp.post_json(
        "/api/v1/alerts",
        {"external_id": "A-NOBODY", "topic": topic.key, "text": "Hello"},
        headers=bearer("alerts:send"),
        status=422,
    )
    assert {e["pointer"] for e in response.json["errors"]} == {"/external_id", "/topic"}


def test_an_unknown_member_does_not_take_a_key_from_a_known_one(testapp, bearer, dbsession) -> None:
    fay = make_customer(dbsession, external_id="I-FAY")
    batch = {
        "interactions": [
            _item("I-NOBODY", "f1", "2026-03-01T10:00:00Z"),
            _item("I-FAY", "f1", "2026-03-02T10:00:00Z", data={"nested": {"list": [1, "é"]}}),
            _item("I-FAY", "f2", "2026-03-03T10:00:00+02:00", data={}),
        ]
    }
    body = testapp.post_json("/api/v1/interactions", batch, headers=bearer("interactions:write"))
    assert [r["status"] for r in body.json["results"]] == ["unknown_customer", "created", "created"]
    dbsession.expire_all()
    stored = dbsession.scalars(
        sa.select(Interaction)
        .where(Interaction.customer_id == fay.id)
        .order_by(Interaction.occurred_at)
    ).all()
    assert [(i.idempotency_key, i.data, i.source) for i in stored] == [
        ("f1", {"nested": {"list": [1, "é"]}}, stored[0].source),
        ("f2", {}, stored[0].source),
    ]
    assert stored[0].source.startswith("api:")
    assert stored[1].occurred_at == dt.datetime(2026, 3, 3, 8, 0, tzinfo=dt.UTC)
    assert dbsession.get(Customer, fay.id).last_interaction_at == stored[1].occurred_at
