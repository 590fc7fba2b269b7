"""Topics, the pressure policy and webhook endpoints (scope admin)."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from prefcenter.models import PressureRule, WebhookEndpoint
from prefcenter.services.webhooks import signing_secret
from tests.conftest import TEST_SECRET


def test_topics_are_created_updated_and_listed(testapp, bearer) -> None:
    admin = bearer("admin")
    topic = {
        "names": {"fr": "Offres", "en": "Offers"},
        "kind": "marketing",
        "regime": "opt_in",
    }
    created = testapp.put_json("/api/v1/topics/offers_admin", topic, headers=admin, status=201)
    assert created.json["key"] == "offers_admin" and created.json["active"] is True
    updated = testapp.put_json(
        "/api/v1/topics/offers_admin", {**topic, "active": False}, headers=admin, status=200
    )
    assert updated.json["active"] is False
    listed = testapp.get("/api/v1/topics", headers=bearer("preferences:read")).json["topics"]
    assert "offers_admin" in [t["key"] for t in listed]


def test_a_topic_with_a_bad_kind_or_key_is_rejected(testapp, bearer) -> None:
    admin = bearer("admin")
    response = testapp.put_json(
        "/api/v1/topics/offers",
        {"names": {"fr": "Offres"}, "kind": "spam", "regime": "opt_in"},
        headers=admin,
        status=422,
    )
    assert response.json["errors"][0]["pointer"] == "/kind"
    response = testapp.put_json(
        "/api/v1/topics/Bad%20Key",
        {"names": {"fr": "Offres"}, "kind": "marketing", "regime": "opt_in"},
        headers=admin,
        status=400,
    )
    assert response.json["errors"][0]["parameter"] == "key"


def test_the_pressure_policy_is_replaced_whole(testapp, bearer, dbsession) -> None:
    admin = bearer("admin")
    rules = [
        {"channel": None, "period_days": 7, "max_messages": 3},
        {"channel": "sms", "period_days": 1, "max_messages": 1},
    ]
    body = testapp.put_json("/api/v1/pressure-policy", {"rules": rules}, headers=admin).json
    assert sorted(body["rules"], key=str) == sorted(rules, key=str)
    assert testapp.get("/api/v1/pressure-policy", headers=admin).json == body


def test_a_rejected_pressure_policy_changes_nothing(testapp, bearer, dbsession) -> None:
    admin = bearer("admin")
    testapp.put_json(
        "/api/v1/pressure-policy",
        {"rules": [{"channel": None, "period_days": 7, "max_messages": 3}]},
        headers=admin,
    )
    response = testapp.put_json(
        "/api/v1/pressure-policy",
        {
            "rules": [
                {"channel": None, "period_days": 7, "max_messages": 3},
                {"channel": None, "period_days": 7, "max_messages": 5},
            ]
        },
        headers=admin,
        status=422,
    )
    assert response.json["errors"][0]["code"] == "duplicate"
    dbsession.expire_all()
    assert [
        (r.period_days, r.max_messages) for r in dbsession.scalars(sa.select(PressureRule))
    ] == [(7, 3)]


def test_webhook_endpoints_are_registered_listed_and_deleted(testapp, bearer, dbsession) -> None:
    admin = bearer("admin")
    created = testapp.post_json(
        "/api/v1/webhooks",
        {"url": "https://loyalty.example.com/hooks", "events": ["customer.erased"]},
        headers=admin,
        status=201,
    ).json
    assert created["secret"] == signing_secret(TEST_SECRET, uuid.UUID(created["id"]))
    listed = testapp.get("/api/v1/webhooks", headers=admin).json["webhooks"]
    assert [w["id"] for w in listed] == [created["id"]]
    assert "secret" not in listed[0]  # shown once
    # Another key sees none of them and cannot delete them.
    other = bearer("admin")
    assert testapp.get("/api/v1/webhooks", headers=other).json["webhooks"] == []
    testapp.delete(f"/api/v1/webhooks/{created['id']}", headers=other, status=404)
    testapp.delete(f"/api/v1/webhooks/{created['id']}", headers=admin, status=204)
    assert testapp.get("/api/v1/webhooks", headers=admin).json["webhooks"] == []
    dbsession.expire_all()
    assert dbsession.get(WebhookEndpoint, uuid.UUID(created["id"])).active is False


def test_a_webhook_url_must_be_http(testapp, bearer) -> None:
    response = testapp.post_json(
        "/api/v1/webhooks", {"url": "ftp://example.com/x"}, headers=bearer("admin"), status=422
    )
    assert response.json["errors"][0]["pointer"] == "/url"


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.7/hooks",
        "http://hooks.example.com/x",
    ],
)
def test_a_webhook_url_must_be_public_https_and_nothing_is_registered(
    testapp, bearer, dbsession, url
) -> None:
    admin = bearer("admin")
    response = testapp.post_json("/api/v1/webhooks", {"url": url}, headers=admin, status=422)
    (error,) = response.json["errors"]
    assert (error["pointer"], error["value"]) == ("/url", url)
    assert "https" in error["reason"] or "private" in error["reason"]
    assert testapp.get("/api/v1/webhooks", headers=admin).json["webhooks"] == []
    assert dbsession.scalars(sa.select(WebhookEndpoint)).all() == []
