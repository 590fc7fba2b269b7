"""Errors as application/problem+json (RFC 9457), naming the field, the value and why.

Views and the request wrapper *raise* :class:`ApiProblem`; its exception view renders it.
Because the response comes from an exception view, pyramid_tm aborts the transaction, so a
rejected request changes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from pyramid.httpexceptions import HTTPException
from pyramid.response import Response

from ..errors import InvalidField, InvalidInput

PROBLEM_TYPE = "about:blank"
CONTENT_TYPE = "application/problem+json"
TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
}
log = logging.getLogger(__name__)


class ApiProblem(Exception):
    """An error answered to the API client; nothing the request did is kept."""

    def __init__(
        self,
        status: int,
        detail: str,
        errors: Sequence[InvalidField] = (),
        *,
        in_query: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors)
        self.in_query = in_query
        self.headers = headers or {}

    @classmethod
    def invalid(cls, exc: InvalidInput, status: int = 422) -> ApiProblem:
        return cls(status, "The request was rejected; nothing was changed.", exc.errors)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE,
            "title": TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = [_error_item(e, self.in_query) for e in self.errors]
        return body


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def _error_item(error: InvalidField, in_query: bool) -> dict[str, Any]:
    where = "parameter" if in_query else "pointer"
    field = error.field if in_query or error.field.startswith("/") else f"/{error.field}"
    return {
        where: field,
        "value": _jsonable(error.value),
        "reason": error.reason,
        "code": error.code,
    }


def problem_response(problem: ApiProblem) -> Response:
    response = Response(
        body=json.dumps(problem.body()).encode(),
        status=problem.status,
        content_type=CONTENT_TYPE,
        charset="utf-8",
    )
    response.headers.update(problem.headers)
    return response


def problem_view(exc: ApiProblem, request: Any) -> Response:
    return problem_response(exc)


def http_exception_view(exc: HTTPException, request: Any) -> Response:
    """Pyramid's own 404/405 under /api answered as problems too."""
    status = 405 if exc.code == 404 and _other_method_matches(request) else exc.code
    detail = {404: "No such resource.", 405: "This method is not allowed here."}.get(
        status, exc.title
    )
    return problem_response(ApiProblem(status, detail))


def _other_method_matches(request: Any) -> bool:
    # A route matched but no view for this method: Pyramid raises PredicateMismatch (a 404).
    return request.matched_route is not None


def error_view(exc: Exception, request: Any) -> Response:
    log.exception("API request failed: %s %s", request.method, request.path, exc_info=exc)
    return problem_response(ApiProblem(500, "Something went wrong on our side; nothing changed."))
