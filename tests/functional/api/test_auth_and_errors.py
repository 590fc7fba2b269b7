"""Keys, scopes, problem+json errors, limits and the OpenAPI document."""

from __future__ import annotations

import uuid

import pytest
import webtest
import yaml
from sqlalchemy.orm import Session

from prefcenter import make_wsgi_app
from prefcenter.api import OPERATIONS, SINGLE_READS
from prefcenter.api.security import TokenBuckets, VerifiedKeys, unstorable_text
from prefcenter.api.spec import Spec
from prefcenter.db import DBBIND_KEY
from prefcenter.services.apikeys import VerifiedKey, revoke_api_key
from tests.conftest import app_settings
from tests.factories import make_api_key, make_customer

# One request per operation, enough to reach the scope check.
REQUESTS = [
    ("GET", "/api/v1/customers", None),
    ("PUT", "/api/v1/customers/M-1", {}),
    ("GET", "/api/v1/customers/M-1", None),
    ("DELETE", "/api/v1/customers/M-1", None),
    ("GET", "/api/v1/customers/M-1/preferences", None),
    ("PATCH", "/api/v1/customers/M-1/preferences", {}),
    ("GET", "/api/v1/customers/M-1/decision?channel=email&topic=x", None),
    ("GET", "/api/v1/customers/M-1/export", None),
    ("POST", "/api/v1/interactions", {"interactions": []}),
    ("POST", "/api/v1/alerts", {}),
    ("GET", "/api/v1/topics", None),
    ("PUT", "/api/v1/topics/offers", {}),
    ("GET", "/api/v1/pressure-policy", None),
    ("PUT", "/api/v1/pressure-policy", {}),
    ("GET", "/api/v1/webhooks", None),
    ("POST", "/api/v1/webhooks", {}),
    ("DELETE", "/api/v1/webhooks/7a1c1c57-3f5e-4f61-9d0c-4d3c9b7b0c11", None),
]
SCOPES = {
    "list_customers": "customers:read",
    "put_customer": "customers:write",
    "get_customer": "customers:read",
    "erase_customer": "gdpr",
    "get_preferences": "preferences:read",
    "patch_preferences": "preferences:write",
    "get_decision": "preferences:read",
    "export_customer": "gdpr",
    "post_interactions": "interactions:write",
    "post_alert": "alerts:send",
    "list_topics": "preferences:read",
    "put_topic": "admin",
    "get_pressure_policy": "admin",
    "put_pressure_policy": "admin",
    "list_webhooks": "admin",
    "post_webhook": "admin",
    "delete_webhook": "admin",
}


def _call(testapp: webtest.TestApp, method: str, url: str, body, headers, status):
    if body is None:
        return testapp.request(url, method=method, headers=headers, status=status)
    return getattr(testapp, f"{method.lower()}_json")(url, body, headers=headers, status=status)


def test_every_operation_of_the_document_has_a_view_and_a_test_request() -> None:
    spec = Spec.load()
    assert {op for _r, _m, op, _v in OPERATIONS} == set(spec.operations)
    assert {op: spec.operations[op].scopes[0] for op in spec.operations} == SCOPES
    assert len(REQUESTS) == len(spec.operations)


def test_only_reads_run_outside_a_transaction() -> None:
    methods = {op: method for _r, method, op, _v in OPERATIONS}
    assert SINGLE_READS.issubset(methods)
    assert {methods[op] for op in SINGLE_READS} == {"GET"}


@pytest.mark.parametrize(("method", "url", "body"), REQUESTS)
def test_without_a_key_every_operation_answers_401(testapp, method, url, body) -> None:
    response = _call(testapp, method, url, body, {}, 401)
    assert response.content_type == "application/problem+json"
    assert response.json["status"] == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "url", "body"), REQUESTS)
def test_an_unknown_or_revoked_key_answers_401(testapp, dbsession, method, url, body) -> None:
    unknown = {"Authorization": "Bearer pc_abcdefgh_" + "x" * 43}
    assert _call(testapp, method, url, body, unknown, 401).json["status"] == 401
    key, plaintext = make_api_key(dbsession, scopes=tuple(set(SCOPES.values())))
    revoke_api_key(dbsession, key.prefix)
    _call(testapp, method, url, body, {"Authorization": f"Bearer {plaintext}"}, 401)


@pytest.mark.parametrize(("method", "url", "body"), REQUESTS)
def test_a_key_without_the_scope_answers_403(testapp, bearer, method, url, body) -> None:
    spec = Spec.load()
    operation = next(
        op for op in spec.operations.values() if op.method == method and _matches(op.path, url)
    )
    others = [s for s in set(SCOPES.values()) | {"campaigns:read"} if s not in operation.scopes]
    response = _call(testapp, method, url, body, bearer(*others), 403)
    assert response.content_type == "application/problem+json"
    assert " or ".join(operation.scopes) in response.json["detail"]


def _matches(template: str, url: str) -> bool:
    path = url.split("?")[0].split("/")
    parts = template.split("/")
    return len(path) == len(parts) and all(
        p.startswith("{") or p == q for p, q in zip(parts, path, strict=True)
    )


def test_unknown_fields_are_rejected_naming_the_field(testapp, bearer) -> None:
    response = testapp.put_json(
        "/api/v1/customers/M-1",
        {"email": "a@example.com", "favourite_colour": "blue"},
        headers=bearer("customers:write"),
        status=422,
    )
    assert response.content_type == "application/problem+json"
    assert response.json["errors"] == [
        {
            "pointer": "/favourite_colour",
            "value": "blue",
            "reason": "is not a known field",
            "code": "unknown_field",
        }
    ]


def test_a_wrong_type_names_the_pointer_value_and_reason(testapp, bearer) -> None:
    response = testapp.put_json(
        "/api/v1/customers/M-1",
        {"postal_address": {"line1": "1 rue de la Paix", "postal_code": 75002, "city": "Paris"}},
        headers=bearer("customers:write"),
        status=422,
    )
    pointers = [e["pointer"] for e in response.json["errors"]]
    assert "/postal_address/postal_code" in pointers or "/postal_address" in pointers


def test_invalid_json_is_a_400_and_other_media_types_a_415(testapp, bearer) -> None:
    headers = bearer("customers:write")
    response = testapp.put(
        "/api/v1/customers/M-1",
        b"{not json",
        headers={**headers, "Content-Type": "application/json"},
        status=400,
    )
    assert response.json["errors"][0]["code"] == "invalid_json"
    testapp.put(
        "/api/v1/customers/M-1",
        b"email=a@example.com",
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
        status=415,
    )


def test_a_bad_query_parameter_is_named(testapp, bearer) -> None:
    response = testapp.get(
        "/api/v1/customers?limit=5000", headers=bearer("customers:read"), status=400
    )
    assert response.json["errors"][0]["parameter"] == "limit"
    assert response.json["errors"][0]["value"] == 5000


def test_unknown_paths_and_methods_are_problems(testapp, bearer) -> None:
    response = testapp.get("/api/v1/nowhere", status=404)
    assert response.content_type == "application/problem+json"
    response = testapp.post_json("/api/v1/topics", {}, headers=bearer("admin"), status=405)
    assert response.content_type == "application/problem+json"


def _app_with(connection, broker, **settings) -> webtest.TestApp:
    app = make_wsgi_app(
        app_settings(**{DBBIND_KEY: connection, "prefcenter.broker": broker, **settings})
    )
    return webtest.TestApp(app)


def test_a_key_over_its_rate_is_answered_429_with_retry_after(
    connection, broker, dbsession: Session
) -> None:
    app = _app_with(
        connection, broker, **{"prefcenter.api.burst": "2", "prefcenter.api.rate_per_second": "0.5"}
    )
    _key, plaintext = make_api_key(dbsession, scopes=("admin",))
    headers = {"Authorization": f"Bearer {plaintext}"}
    app.get("/api/v1/topics", headers=headers, status=200)
    app.get("/api/v1/topics", headers=headers, status=200)
    response = app.get("/api/v1/topics", headers=headers, status=429)
    assert response.content_type == "application/problem+json"
    assert int(response.headers["Retry-After"]) >= 1
    # Another key has its own bucket.
    _other, other = make_api_key(dbsession, scopes=("admin",))
    app.get("/api/v1/topics", headers={"Authorization": f"Bearer {other}"}, status=200)


def test_token_bucket_refills_with_time() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=1.0, burst=1, clock=lambda: now[0])
    assert buckets.take("k") == 0
    assert buckets.take("k") == pytest.approx(1.0)
    now[0] = 1.0
    assert buckets.take("k") == 0


def test_a_body_over_the_limit_is_answered_413(connection, broker, dbsession) -> None:
    app = _app_with(connection, broker, **{"prefcenter.api.max_body_bytes": "1000"})
    _key, plaintext = make_api_key(dbsession, scopes=("customers:write",))
    response = app.put_json(
        "/api/v1/customers/M-1",
        {"attributes": {"notes": "x" * 2000}},
        headers={"Authorization": f"Bearer {plaintext}"},
        status=413,
    )
    assert response.content_type == "application/problem+json"


def test_the_document_and_its_docs_page_are_served(testapp) -> None:
    response = testapp.get("/api/v1/openapi.yaml", status=200)
    document = yaml.safe_load(response.body)
    assert document["openapi"].startswith("3.")
    assert "/api/v1/customers/{external_id}/preferences" in document["paths"]
    page = testapp.get("/api/v1/docs", status=200)
    assert "PATCH" in page.text and "/api/v1/interactions" in page.text
    assert "<script" not in page.text
    # Each operation: its summary, its parameters (refs followed), body and answer schemas.
    listing = page.text[page.text.index('id="list_customers"') :]
    listing = listing[: listing.index('<div class="op"', 1)]
    assert document["paths"]["/api/v1/customers"]["get"]["summary"] in listing
    assert "<code>cursor</code></td><td>query</td><td>no</td>" in listing
    assert '<a href="#CustomerPage">CustomerPage</a>' in listing
    patch = page.text[page.text.index('id="patch_preferences"') :]
    assert "<code>external_id</code></td><td>path</td><td>yes</td>" in patch
    assert '<a href="#PreferencesPatch"><code>PreferencesPatch</code></a>' in patch
    assert 'id="PreferencesPatch"' in page.text  # the anchor the links point at


def test_a_valid_key_is_accepted(testapp, bearer, dbsession) -> None:
    customer = make_customer(dbsession, external_id="M-OK")
    response = testapp.get("/api/v1/customers/M-OK", headers=bearer("customers:read"))
    assert response.json["id"] == str(customer.id)


def test_text_that_cannot_be_stored_is_rejected_not_a_500(testapp, bearer) -> None:
    response = testapp.put_json(
        "/api/v1/customers/M-NUL",
        {"attributes": {"note": "a\x00b"}},
        headers=bearer("customers:write"),
        status=422,
    )
    assert response.json["errors"][0]["pointer"] == "/attributes/note"
    assert response.json["errors"][0]["code"] == "invalid_character"


def test_a_revoked_key_is_refused_once_its_verification_is_forgotten(
    connection, broker, dbsession: Session
) -> None:
    app = _app_with(connection, broker, **{"prefcenter.api.key_cache_seconds": "5"})
    now = [100.0]
    app.app.registry["api"].keys.clock = lambda: now[0]
    key, plaintext = make_api_key(dbsession, scopes=("admin",))
    headers = {"Authorization": f"Bearer {plaintext}"}
    app.get("/api/v1/topics", headers=headers, status=200)
    revoke_api_key(dbsession, key.prefix)
    app.get("/api/v1/topics", headers=headers, status=200)  # verified 0 s ago: remembered
    now[0] += 5
    app.get("/api/v1/topics", headers=headers, status=401)


def test_with_no_key_cache_a_revoked_key_is_refused_at_once(
    connection, broker, dbsession: Session
) -> None:
    app = _app_with(connection, broker, **{"prefcenter.api.key_cache_seconds": "0"})
    key, plaintext = make_api_key(dbsession, scopes=("admin",))
    headers = {"Authorization": f"Bearer {plaintext}"}
    app.get("/api/v1/topics", headers=headers, status=200)
    revoke_api_key(dbsession, key.prefix)
    app.get("/api/v1/topics", headers=headers, status=401)


def test_verified_keys_forget_the_oldest_when_full() -> None:
    now = [0.0]
    keys = VerifiedKeys(ttl=10, size=2, clock=lambda: now[0])
    for n in range(3):
        keys.remember(f"d{n}", VerifiedKey(uuid.uuid4(), f"p{n}", ("admin",)))
        now[0] += 4
    assert keys.get("d2") is not None
    assert keys.get("d0") is None  # dropped when the cache was full
    now[0] = 100
    assert keys.get("d2") is None


def test_text_that_cannot_be_stored_is_named_wherever_it_is() -> None:
    body = {"a": ["fine", "lone \ud800"], "k\x00": 1, "ok": "a literal \\u0000 is fine"}
    found = unstorable_text(body)
    assert [(f.field, f.code) for f in found] == [
        ("/a/1", "invalid_character"),
        ("/k\x00", "invalid_character"),
    ]
    assert unstorable_text({"ok": "a literal \\u0000 is fine", "é": ["ü"]}) == []
