"""Customers: upsert, read, list by cursor; GDPR export and erasure."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from prefcenter.models import ConsentLedgerEntry, Customer
from tests.factories import make_customer

MEMBER = {
    "email": "Camille.Martin@Example.com",
    "phone": "+33612345678",
    "first_name": "Camille",
    "last_name": "Martin",
    "locale": "en",
    "timezone": "America/Martinique",
    "postal_address": {
        "line1": "1 rue de la Paix",
        "postal_code": "75002",
        "city": "Paris",
        "country": "FR",
    },
    "attributes": {"tier": "gold", "points": 1200},
}


def test_put_creates_then_updates(testapp, bearer, dbsession) -> None:
    headers = bearer("customers:write", "customers:read")
    created = testapp.put_json("/api/v1/customers/M-100", MEMBER, headers=headers, status=201)
    body = created.json
    assert body["external_id"] == "M-100"
    assert body["email"] == "camille.martin@example.com"
    assert body["phone"] == "+33612345678"
    assert body["timezone"] == "America/Martinique"
    assert body["postal_address"]["city"] == "Paris"
    assert body["attributes"] == {"tier": "gold", "points": 1200}

    updated = testapp.put_json(
        "/api/v1/customers/M-100",
        {"attributes": {"tier": "platinum"}, "phone": None},
        headers=headers,
        status=200,
    )
    assert updated.json["id"] == body["id"]
    assert updated.json["attributes"] == {"tier": "platinum"}
    assert updated.json["phone"] is None
    assert updated.json["email"] == "camille.martin@example.com"  # absent fields are kept
    assert testapp.get("/api/v1/customers/M-100", headers=headers).json == updated.json

    ledger = dbsession.scalars(
        sa.select(ConsentLedgerEntry.field).where(
            ConsentLedgerEntry.customer_id == uuid.UUID(body["id"])
        )
    ).all()
    assert {"address.email", "address.phone", "address.postal", "timezone"} <= set(ledger)


def test_invalid_fields_are_all_named_and_nothing_is_created(testapp, bearer, dbsession) -> None:
    response = testapp.put_json(
        "/api/v1/customers/M-101",
        {"email": "not-an-address", "timezone": "Mars/Olympus"},
        headers=bearer("customers:write"),
        status=422,
    )
    pointers = {e["pointer"]: e for e in response.json["errors"]}
    assert set(pointers) == {"/email", "/timezone"}
    assert pointers["/email"]["value"] == "not-an-address"
    assert dbsession.scalar(sa.select(Customer).where(Customer.external_id == "M-101")) is None


def test_a_phone_that_is_not_e164_is_rejected(testapp, bearer) -> None:
    response = testapp.put_json(
        "/api/v1/customers/M-102",
        {"phone": "06 12 34 56 78"},
        headers=bearer("customers:write"),
        status=422,
    )
    assert response.json["errors"][0]["pointer"] == "/phone"


def test_get_unknown_is_404(testapp, bearer) -> None:
    response = testapp.get("/api/v1/customers/NOPE", headers=bearer("customers:read"), status=404)
    assert response.content_type == "application/problem+json"


def test_list_pages_with_a_cursor(testapp, bearer, dbsession) -> None:
    for n in range(5):
        make_customer(dbsession, external_id=f"LIST-{n}")
    headers = bearer("customers:read")
    seen: list[str] = []
    cursor = None
    while True:
        url = "/api/v1/customers?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = testapp.get(url, headers=headers).json
        seen += [c["external_id"] for c in page["customers"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    listed = [s for s in seen if s.startswith("LIST-")]
    assert listed == [f"LIST-{n}" for n in range(5)]
    assert seen == sorted(seen)


def test_a_forged_cursor_is_a_400(testapp, bearer) -> None:
    response = testapp.get(
        "/api/v1/customers?cursor=!!!", headers=bearer("customers:read"), status=400
    )
    assert response.json["errors"][0]["parameter"] == "cursor"


def test_export_and_erase(testapp, bearer, dbsession) -> None:
    customer = make_customer(dbsession, external_id="GONE-1", email="gone@example.com")
    headers = bearer("gdpr", "customers:read")
    export = testapp.get("/api/v1/customers/GONE-1/export", headers=headers).json
    assert "gone@example.com" in str(export)

    testapp.delete("/api/v1/customers/GONE-1", headers=headers, status=204)
    dbsession.expire_all()
    erased = dbsession.get(Customer, customer.id)
    assert erased.erased_at is not None and erased.email is None
    testapp.get("/api/v1/customers/GONE-1", headers=headers, status=404)
    testapp.delete("/api/v1/customers/GONE-1", headers=headers, status=404)
