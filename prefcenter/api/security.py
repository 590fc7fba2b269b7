"""Who is calling and may they: bearer API keys, scopes, a per-key rate limit, body limits.

Every API view is wrapped by :func:`api_view` — explicit, no scan, no custom predicate: it
authenticates, checks the operation's scopes (read from openapi.yaml), takes a token from
the key's bucket, reads and validates the JSON body and parameters, calls the view and
checks its answer against the document.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from pyramid.response import Response
from sqlalchemy.orm import Session

from .. import db
from ..consent_settings import ConsentSettings
from ..errors import InvalidField
from ..models import utcnow
from ..services.apikeys import VerifiedKey, hash_key, prefix_of, verify_api_key
from ..services.ledger import Actor
from .problems import ApiProblem
from .spec import Operation, Spec

MEDIA_TYPE = "application/json"


class TokenBuckets:
    """A token bucket per API key, in this process's memory.

    Each web process keeps its own buckets: with N processes a key may make up to N times
    the rate. Good enough to stop a runaway client; a shared limit would need the database.
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one token; 0 when allowed, else the seconds until a token is available."""
        with self._lock:
            now = self.clock()
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate


class VerifiedKeys:
    """API keys this process verified in the last ``ttl`` seconds, by SHA-256 digest.

    Most requests then skip the key lookup. A key revoked meanwhile (``prefcenter
    revoke-api-key``, another process) keeps working here for at most ``ttl`` seconds;
    ``ttl`` 0 looks every key up. Unknown keys are never remembered.
    """

    def __init__(
        self, ttl: float, size: int = 1024, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self._keys: dict[str, tuple[VerifiedKey, float]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> VerifiedKey | None:
        found = self._keys.get(digest)
        if found is None or found[1] <= self.clock():
            return None
        return found[0]

    def remember(self, digest: str, key: VerifiedKey) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._keys) >= self.size:
                now = self.clock()
                self._keys = {d: kept for d, kept in self._keys.items() if kept[1] > now}
                if len(self._keys) >= self.size:
                    self._keys.clear()
            self._keys[digest] = (key, self.clock() + self.ttl)


@dataclasses.dataclass(frozen=True)
class ApiConfig:
    """What the API needs from the settings, read once at start-up."""

    spec: Spec
    consent: ConsentSettings
    secret: str
    buckets: TokenBuckets
    max_body_bytes: int
    validate_responses: bool
    keys: VerifiedKeys
    allow_private_webhooks: bool = False  # development: receivers on localhost


@dataclasses.dataclass
class Call:
    """One authorized, validated API request, as the view sees it."""

    request: Any
    session: Session
    api_key: VerifiedKey
    body: Any
    params: dict[str, Any]
    config: ApiConfig
    now: dt.datetime

    @property
    def actor(self) -> Actor:
        return Actor.api_key(
            self.api_key.prefix, ip=self.request.client_addr, user_agent=self.request.user_agent
        )


@dataclasses.dataclass(frozen=True)
class Reply:
    status: int
    body: Any = None


def _bearer(request: Any) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate(request: Any, keys: VerifiedKeys) -> VerifiedKey:
    token = _bearer(request)
    if token is None:
        raise ApiProblem(
            401,
            "Send an API key as 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": 'Bearer realm="prefcenter"'},
        )
    api_key = None
    if prefix_of(token) is not None:
        digest = hash_key(token)
        api_key = keys.get(digest)
        if api_key is None:
            api_key = verify_api_key(request.dbsession, digest)
            if api_key is not None:
                keys.remember(digest, api_key)
    if api_key is None:
        raise ApiProblem(
            401,
            "This API key is unknown or has been revoked.",
            headers={"WWW-Authenticate": 'Bearer realm="prefcenter", error="invalid_token"'},
        )
    return api_key


def authorize(api_key: VerifiedKey, operation: Operation) -> None:
    if operation.scopes and not set(operation.scopes) & set(api_key.scopes):
        raise ApiProblem(
            403,
            f"This API key lacks the scope this operation needs: {' or '.join(operation.scopes)}.",
        )


def read_json(request: Any, max_bytes: int) -> Any:
    length = request.content_length
    if length is not None and length > max_bytes:
        raise ApiProblem(413, f"The request body is larger than {max_bytes} bytes.")
    # Read the stream once, bounded: webob's seekable copy would spill big bodies to temp files.
    raw = request.body_file_raw.read(length) if length else b""
    if request.content_type != MEDIA_TYPE:
        raise ApiProblem(415, f"Send the body as {MEDIA_TYPE}.")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiProblem(
            400, "The body is not valid JSON.", [InvalidField("", None, str(exc), "invalid_json")]
        ) from None


def _storable(text: str) -> bool:
    # PostgreSQL text and JSONB hold neither NUL nor lone surrogates (not UTF-8).
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _surely_storable(value: Any) -> bool:
    # One C-speed pass: lone surrogates fail to encode, a NUL is dumped as \u0000.
    try:
        dumped = json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, TypeError, ValueError):
        return False
    return b"\\u0000" not in dumped


def unstorable_text(value: Any, pointer: str = "") -> list[InvalidField]:
    """Strings (keys too) we could not store, named by JSON pointer."""
    if isinstance(value, dict | list) and _surely_storable(value):
        return []
    found: list[InvalidField] = []
    if isinstance(value, str):
        if not _storable(value):
            found.append(
                InvalidField(
                    pointer,
                    value.encode("utf-8", "backslashreplace").decode(),
                    "contains a NUL character or invalid Unicode",
                    "invalid_character",
                )
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{pointer}/{str(key).replace('~', '~0').replace('/', '~1')}"
            if not _storable(str(key)):
                found.append(
                    InvalidField(
                        where,
                        None,
                        "has a name with a NUL character or invalid Unicode",
                        "invalid_character",
                    )
                )
            found.extend(unstorable_text(item, where))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(unstorable_text(item, f"{pointer}/{index}"))
    return found


def _json_response(status: int, body: Any) -> Response:
    if body is None:
        response = Response(status=status)
        response.content_type = None
        return response
    return Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type=MEDIA_TYPE,
        charset="utf-8",
    )


def api_view(
    operation_id: str, view: Callable[[Call], Reply], *, single_read: bool = False
) -> Callable[[Any], Response]:
    """The Pyramid view for one operation of openapi.yaml (``single_read``: the view
    writes nothing and reads in one statement, run outside a transaction)."""

    def handle(request: Any) -> Response:
        if single_read:
            with db.single_read(request) as session:
                return _handle(request, session)
        return _handle(request, request.dbsession)

    def _handle(request: Any, session: Any) -> Response:
        config: ApiConfig = request.registry["api"]
        operation = config.spec.operations[operation_id]
        api_key = authenticate(request, config.keys)
        authorize(api_key, operation)
        wait = config.buckets.take(api_key.prefix)
        if wait:
            raise ApiProblem(
                429,
                "Too many requests for this API key; try again later.",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        raw_parameters = {**request.matchdict, **request.GET}
        bad = [e for name, v in raw_parameters.items() for e in unstorable_text(v, name)]
        if bad:
            raise ApiProblem(400, "A parameter is invalid.", bad, in_query=True)
        path, path_errors = config.spec.check_parameters(operation, "path", request.matchdict)
        if path_errors:
            raise ApiProblem(400, "A path parameter is invalid.", path_errors, in_query=True)
        query, query_errors = config.spec.check_parameters(operation, "query", request.GET)
        if query_errors:
            raise ApiProblem(400, "A query parameter is invalid.", query_errors, in_query=True)
        body = None
        if operation.body_schema is not None:
            body = read_json(request, config.max_body_bytes)
            errors = unstorable_text(body) or config.spec.errors(operation.body_schema, body)
            if errors:
                raise ApiProblem(422, "The request body does not match the schema.", errors)
        call = Call(request, session, api_key, body, {**path, **query}, config, utcnow())
        reply = view(call)
        if config.validate_responses:
            config.spec.check_response(operation, reply.status, MEDIA_TYPE, reply.body)
        return _json_response(reply.status, reply.body)

    handle.__name__ = operation_id
    handle.__doc__ = view.__doc__
    return handle
