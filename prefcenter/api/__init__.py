"""The loyalty-program REST API (/api/v1): bearer keys with scopes, JSON validated against
openapi.yaml, problem+json errors, per-key rate limits and signed outbound webhooks.

Every operation of openapi.yaml is wired here, explicitly, to one view; a test checks the
two lists agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pyramid.httpexceptions import HTTPException
from pyramid.response import Response

from .. import webhook_tasks
from ..consent_settings import ConsentSettings
from ..settings import as_bool
from . import views
from .problems import ApiProblem, error_view, http_exception_view, problem_view
from .security import ApiConfig, Call, Reply, TokenBuckets, VerifiedKeys, api_view
from .spec import SPEC_PATH, Spec

API_PATHS = r"^/api/"
DEFAULTS = {
    "prefcenter.api.rate_per_second": "20",
    "prefcenter.api.burst": "100",
    "prefcenter.api.max_body_bytes": str(2 * 1024 * 1024),
    "prefcenter.api.validate_responses": "true",
    "prefcenter.api.key_cache_seconds": "5",
    "prefcenter.webhooks.allow_private_targets": "false",
}

# (route, method, operationId in openapi.yaml, view)
OPERATIONS = (
    ("api_customers", "GET", "list_customers", views.list_customers),
    ("api_customer", "PUT", "put_customer", views.put_customer),
    ("api_customer", "GET", "get_customer", views.get_customer),
    ("api_customer", "DELETE", "erase_customer", views.erase_customer),
    ("api_preferences", "GET", "get_preferences", views.get_preferences),
    ("api_preferences", "PATCH", "patch_preferences", views.patch_preferences),
    ("api_decision", "GET", "get_decision", views.get_decision),
    ("api_export", "GET", "export_customer", views.export_customer),
    ("api_interactions", "POST", "post_interactions", views.post_interactions),
    ("api_alerts", "POST", "post_alert", views.post_alert),
    ("api_topics", "GET", "list_topics", views.list_topics),
    ("api_topic", "PUT", "put_topic", views.put_topic),
    ("api_pressure_policy", "GET", "get_pressure_policy", views.get_pressure_policy),
    ("api_pressure_policy", "PUT", "put_pressure_policy", views.put_pressure_policy),
    ("api_webhooks", "GET", "list_webhooks", views.list_webhooks),
    ("api_webhooks", "POST", "post_webhook", views.post_webhook),
    ("api_webhook", "DELETE", "delete_webhook", views.delete_webhook),
)

# The operations whose view writes nothing and reads in one statement: they run in a
# session of their own, outside a transaction on PostgreSQL (prefcenter.db.single_read).
# Not the export, which reads many tables and must see them at one moment.
SINGLE_READS = frozenset({"get_customer", "get_preferences", "list_topics"})


def openapi_document(request: Any) -> Response:
    spec: Spec = request.registry["api"].spec
    if spec.extended:  # other packages added operations: serve the merged document
        body = yaml.safe_dump(spec.document, sort_keys=False, allow_unicode=True).encode()
    else:
        body = SPEC_PATH.read_bytes()
    return Response(body=body, content_type="application/yaml", charset="utf-8")


def add_operations(
    config: Any,
    fragment: Path,
    operations: Sequence[tuple[str, str, str, Callable[[Call], Reply]]],
) -> None:
    """Let another package (the campaign engine) add operations to /api/v1.

    ``fragment`` is an OpenAPI file with ``paths`` and ``components`` of its own; they are
    merged into the one document the API validates against and serves. Each operation
    gets the same authentication, scopes, validation and problem+json errors.
    """
    api: ApiConfig = config.registry["api"]
    spec = api.spec.extended_with(yaml.safe_load(fragment.read_text(encoding="utf-8")))
    config.registry["api"] = dataclasses.replace(api, spec=spec)
    for route, method, operation_id, view in operations:
        config.add_view(
            api_view(operation_id, view),
            route_name=route,
            request_method=method,
            require_csrf=False,
        )


def docs_page(request: Any) -> dict[str, Any]:
    """A readable page listing every operation, its scopes and schemas (no JavaScript)."""
    spec: Spec = request.registry["api"].spec
    document = spec.document
    return {
        "info": document["info"],
        "operations": [
            {
                "op": op,
                "parameters": [spec.resolve(p) for p in op.parameters],
                "body": _ref_name(op.body_schema),
                "responses": [
                    (status, r.get("description", ""), response_schema(r))
                    for status, r in (
                        (status, spec.resolve(response))
                        for status, response in op.responses.items()
                    )
                ],
            }
            for op in sorted(spec.operations.values(), key=lambda o: (o.path, o.method))
        ],
        "schemas": document["components"]["schemas"],
    }


def _ref_name(schema: dict[str, Any] | None) -> str | None:
    ref = (schema or {}).get("$ref", "")
    return ref.rsplit("/", 1)[-1] or None


def response_schema(response: dict[str, Any]) -> str | None:
    content = response.get("content", {})
    for media in ("application/json", "application/problem+json"):
        if media in content:
            return _ref_name(content[media].get("schema"))
    return None


def includeme(config: Any) -> None:
    settings = {**DEFAULTS, **config.get_settings()}
    secret = str(settings["prefcenter.secret"])
    allow_private = as_bool(settings["prefcenter.webhooks.allow_private_targets"])
    config.registry["api"] = ApiConfig(
        spec=Spec.load(),
        consent=ConsentSettings.from_settings(settings),
        secret=secret,
        buckets=TokenBuckets(
            rate=float(settings["prefcenter.api.rate_per_second"]),
            burst=int(settings["prefcenter.api.burst"]),
        ),
        max_body_bytes=int(settings["prefcenter.api.max_body_bytes"]),
        validate_responses=as_bool(settings["prefcenter.api.validate_responses"]),
        keys=VerifiedKeys(ttl=float(settings["prefcenter.api.key_cache_seconds"])),
        allow_private_webhooks=allow_private,
    )
    webhook_tasks.configure(secret, allow_private_targets=allow_private)

    for route, method, operation_id, view in OPERATIONS:
        config.add_view(
            api_view(operation_id, view, single_read=operation_id in SINGLE_READS),
            route_name=route,
            request_method=method,
            require_csrf=False,  # bearer keys, no cookies: nothing to forge
        )
    config.add_view(openapi_document, route_name="api_openapi", request_method="GET")
    config.add_view(
        docs_page, route_name="api_docs", request_method="GET", renderer="api/docs.html"
    )
    config.add_exception_view(problem_view, context=ApiProblem)
    config.add_exception_view(http_exception_view, context=HTTPException, path_info=API_PATHS)
    config.add_exception_view(error_view, context=Exception, path_info=API_PATHS)
