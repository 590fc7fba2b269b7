"""Outbound webhooks: endpoints, the outbox of deliveries, signing and sending.

When a transaction writes consent ledger rows, one event per customer is written to the
``webhook_deliveries`` outbox for every active endpoint that wants it, in that same
transaction; after it commits, the delivery ids are handed to the ``deliver_webhook`` actor
(prefcenter.webhook_tasks). A rolled-back change announces nothing; a lost broker message
leaves a pending row that :func:`due_deliveries` finds again.

Signature: ``X-Prefcenter-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``
with ``X-Prefcenter-Timestamp: <unix seconds>``. The endpoint's secret is derived from the
server secret and its id, so no secret is stored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from ..addresses import derive_key
from ..errors import InvalidInput
from ..models import ApiKey, ConsentLedgerEntry, Customer, WebhookDelivery, WebhookEndpoint, utcnow
from ..models.webhook import WEBHOOK_EVENTS

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
BACKOFF_SECONDS = 30
MAX_BACKOFF_SECONDS = 6 * 3600
# How long a claimed attempt holds the delivery before another worker may try it.
LEASE_SECONDS = 120
TIMEOUT_SECONDS = 10
_CHANGES = "prefcenter.webhooks.changes"
_TO_SEND = "prefcenter.webhooks.to_send"


# --- endpoints ---------------------------------------------------------------------------------


def signing_secret(server_secret: str, endpoint_id: uuid.UUID) -> str:
    """The endpoint's signing secret: HMAC(server secret, endpoint id); never stored."""
    key = derive_key(server_secret, "webhook-signing")
    digest = hmac.new(key, str(endpoint_id).encode(), hashlib.sha256).hexdigest()
    return f"whsec_{digest}"


# --- where we may post (no server-side request forgery) -------------------------------------
#
# An API client chooses the URL; the worker posts from inside the operator's network. A URL
# naming a private, loopback, link-local or otherwise non-public address would let a client
# reach the database, the broker or a cloud metadata service. Registration refuses such
# URLs (and plain http) unless ``prefcenter.webhooks.allow_private_targets`` is on (the
# development default, to try a receiver on localhost); at send time the address actually
# connected to is checked again (a public name may resolve to a private address, or change
# after registration), and redirects are not followed.

_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa")


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def check_url(url: str, *, allow_private: bool = False) -> None:
    """Raise InvalidInput (field ``/url``) unless we may post to ``url``."""

    def refuse(reason: str) -> InvalidInput:
        return InvalidInput.one("/url", url, reason)

    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise refuse("must be an https URL")
    if parts.scheme == "http" and not allow_private:
        raise refuse("must use https (plain http is only accepted in development)")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise refuse("has no host name")
    if parts.username or parts.password:
        raise refuse("must not carry a user name or password (the signature authenticates us)")
    if allow_private:
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost" or host.endswith(_LOCAL_SUFFIXES) or "." not in host:
            raise refuse(
                f"{host!r} is a local host name, not reachable from the internet"
            ) from None
        return
    if not _public(address):
        raise refuse(f"{host} is a private, loopback or reserved address")


class _PublicPeerOnly:
    """Mixed into an http.client connection: refuse a non-public peer once connected."""

    sock: Any
    host: str

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _check_peer(self.sock, self.host)


class _GuardedHTTPConnection(_PublicPeerOnly, http.client.HTTPConnection):
    pass


class _GuardedHTTPSConnection(_PublicPeerOnly, http.client.HTTPSConnection):
    pass


def _check_peer(sock: Any, host: str) -> None:
    peer = ipaddress.ip_address(sock.getpeername()[0])
    if not _public(peer):
        sock.close()
        raise OSError(f"refused: {host} resolves to {peer}, a private or reserved address")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx is recorded as the attempt's answer


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: Any) -> Any:
        return self.do_open(_GuardedHTTPConnection, req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: Any) -> Any:
        return self.do_open(_GuardedHTTPSConnection, req, context=self._context)


_PUBLIC_ONLY = urllib.request.build_opener(_GuardedHTTPHandler, _GuardedHTTPSHandler, _NoRedirects)
_ANY_TARGET = urllib.request.build_opener(_NoRedirects)


def register_endpoint(
    session: Session,
    api_key: ApiKey,
    url: str,
    events: Iterable[str] | None = None,
    *,
    allow_private: bool = False,
) -> WebhookEndpoint:
    check_url(url, allow_private=allow_private)
    wanted = list(dict.fromkeys(events or WEBHOOK_EVENTS))
    unknown = [e for e in wanted if e not in WEBHOOK_EVENTS]
    if unknown:
        raise ValueError(f"unknown webhook events {unknown}")
    endpoint = WebhookEndpoint(
        id=uuid.uuid4(), api_key_id=api_key.id, url=url, events=wanted, active=True
    )
    session.add(endpoint)
    session.flush()
    return endpoint


def list_endpoints(session: Session, api_key: ApiKey) -> list[WebhookEndpoint]:
    return list(
        session.scalars(
            sa.select(WebhookEndpoint)
            .where(WebhookEndpoint.api_key_id == api_key.id, WebhookEndpoint.active.is_(True))
            .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        )
    )


def delete_endpoint(session: Session, api_key: ApiKey, endpoint_id: uuid.UUID) -> bool:
    """Deactivate the endpoint (its delivery log is kept); False if it is not this key's."""
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.api_key_id != api_key.id or not endpoint.active:
        return False
    endpoint.active = False
    session.flush()
    return True


# --- the outbox ---------------------------------------------------------------------------------


def event_for(changes: list[dict[str, Any]]) -> str:
    """One event per customer per transaction: erasure, else unsubscription, else a change."""
    if any(c["field"] == "erased_at" for c in changes):
        return "customer.erased"
    if any(
        (c["field"].startswith("consent.") and c["after"] == "refused")
        or (c["field"].startswith("topic.") and c["after"] == "unsubscribed")
        for c in changes
    ):
        return "customer.unsubscribed"
    return "preference.changed"


def write_deliveries(
    session: Session, changes: dict[uuid.UUID, list[dict[str, Any]]], now: dt.datetime
) -> list[uuid.UUID]:
    """Outbox rows for these customers' changes; returns the new delivery ids."""
    endpoints = list(session.scalars(sa.select(WebhookEndpoint).where(WebhookEndpoint.active)))
    if not endpoints:
        return []
    found = session.execute(
        sa.select(Customer.id, Customer.external_id).where(Customer.id.in_(changes))
    )
    external_ids = {customer_id: external_id for customer_id, external_id in found}
    ids = []
    for customer_id, customer_changes in changes.items():
        kind = event_for(customer_changes)
        event_id = str(uuid.uuid4())
        payload = {
            "id": event_id,
            "type": kind,
            "occurred_at": now.astimezone(dt.UTC).isoformat(),
            "customer": {"id": str(customer_id), "external_id": external_ids.get(customer_id)},
            "changes": customer_changes,
        }
        for endpoint in endpoints:
            if kind not in endpoint.events:
                continue
            delivery = WebhookDelivery(
                id=uuid.uuid4(),
                endpoint_id=endpoint.id,
                event_id=event_id,
                event=kind,
                payload=payload,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
            session.add(delivery)
            ids.append(delivery.id)
    return ids


def _collect_changes(session: Session, _context: Any) -> None:
    for obj in session.new:
        if isinstance(obj, ConsentLedgerEntry):
            changes = session.info.setdefault(_CHANGES, {})
            changes.setdefault(obj.customer_id, []).append(
                {"field": obj.field, "before": obj.before, "after": obj.after}
            )


def note_changes(session: Session, entries: Iterable[dict[str, Any]]) -> None:
    """Ledger rows written with a Core insert (ledger.record_many): announce them too."""
    changes = session.info.setdefault(_CHANGES, {})
    for entry in entries:
        changes.setdefault(entry["customer_id"], []).append(
            {"field": entry["field"], "before": entry["before"], "after": entry["after"]}
        )


def _write_outbox(session: Session) -> None:
    changes = session.info.pop(_CHANGES, None)
    if changes:
        ids = write_deliveries(session, changes, utcnow())
        session.info.setdefault(_TO_SEND, []).extend(ids)


def _enqueue_after_commit(session: Session) -> None:
    ids = session.info.pop(_TO_SEND, None)
    if ids:
        enqueue(ids)


def _forget(session: Session, *_args: Any) -> None:
    session.info.pop(_CHANGES, None)
    session.info.pop(_TO_SEND, None)


def enqueue(delivery_ids: Iterable[uuid.UUID]) -> None:
    """Hand deliveries to the actor; never fails the (already committed) caller."""
    from .. import webhook_tasks

    for delivery_id in delivery_ids:
        try:
            webhook_tasks.deliver_webhook.send(str(delivery_id))
        except Exception:  # a pending row is found again by due_deliveries()
            log.exception("could not enqueue webhook delivery %s", delivery_id)


event.listen(Session, "after_flush", _collect_changes)
event.listen(Session, "before_commit", _write_outbox)
event.listen(Session, "after_commit", _enqueue_after_commit)
event.listen(Session, "after_rollback", _forget)


def due_deliveries(session: Session, now: dt.datetime, limit: int = 1000) -> list[uuid.UUID]:
    """Pending deliveries whose next attempt is due (for a sweeper to enqueue again)."""
    return list(
        session.scalars(
            sa.select(WebhookDelivery.id)
            .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        )
    )


# --- sending -------------------------------------------------------------------------------------


def body_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def backoff(attempts: int) -> dt.timedelta:
    """Wait before attempt ``attempts + 1``: 30 s, 1 min, 2 min, ... at most 6 h."""
    return dt.timedelta(seconds=min(BACKOFF_SECONDS * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS))


@dataclasses.dataclass(frozen=True)
class Attempt:
    """What one run of the actor did with one delivery."""

    sent: bool
    status_code: int | None = None
    retry_at: dt.datetime | None = None  # None: nothing more to do


@dataclasses.dataclass(frozen=True)
class _Claimed:
    url: str
    body: bytes
    secret: str
    attempts: int


def _claim(
    session: Session, delivery_id: uuid.UUID, server_secret: str, now: dt.datetime
) -> _Claimed | None:
    # Compare-and-set: only a pending, due delivery is taken, by one worker at a time.
    taken = session.execute(
        sa.update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= now,
        )
        .values(
            attempts=WebhookDelivery.attempts + 1,
            next_attempt_at=now + dt.timedelta(seconds=LEASE_SECONDS),
        )
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:
        return None
    delivery, endpoint = session.execute(
        sa.select(WebhookDelivery, WebhookEndpoint)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.id == delivery_id)
    ).one()
    return _Claimed(
        endpoint.url if endpoint.active else "",
        body_bytes(delivery.payload),
        signing_secret(server_secret, endpoint.id),
        delivery.attempts,
    )


def post(
    url: str, body: bytes, headers: dict[str, str], *, allow_private: bool = False
) -> tuple[int | None, str | None]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    opener = _ANY_TARGET if allow_private else _PUBLIC_ONLY
    try:
        with opener.open(request, timeout=TIMEOUT_SECONDS) as response:
            return response.status, None
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code}"
    except urllib.error.URLError as exc:
        return None, str(exc.reason)[:500]
    except OSError as exc:
        return None, str(exc)[:500]


def attempt_delivery(
    unit_of_work: Callable[[], contextlib.AbstractContextManager[Session]],
    delivery_id: uuid.UUID,
    *,
    server_secret: str,
    now: dt.datetime | None = None,
    allow_private: bool = False,
) -> Attempt:
    """Try to send one delivery: claim it, POST it signed, record the outcome.

    Three steps, two short transactions: the HTTP call is made outside any transaction.
    A delivery already sent (or being tried by another worker) is left alone.
    """
    now = now or utcnow()
    with unit_of_work() as session:
        claimed = _claim(session, delivery_id, server_secret, now)
    if claimed is None:
        return Attempt(sent=False)
    if not claimed.url:
        code, error = None, "endpoint deleted"
    else:
        timestamp = int(now.timestamp())
        code, error = post(
            claimed.url,
            claimed.body,
            {
                "Content-Type": "application/json",
                "User-Agent": "prefcenter-webhooks/1",
                "X-Prefcenter-Timestamp": str(timestamp),
                "X-Prefcenter-Signature": signature(claimed.secret, timestamp, claimed.body),
            },
            allow_private=allow_private,
        )
    with unit_of_work() as session:
        return _record(session, delivery_id, claimed, code, error, now)


def _record(
    session: Session,
    delivery_id: uuid.UUID,
    claimed: _Claimed,
    code: int | None,
    error: str | None,
    now: dt.datetime,
) -> Attempt:
    pending = sa.update(WebhookDelivery).where(
        WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending"
    )
    if code is not None and 200 <= code < 300:
        session.execute(pending.values(status="sent", sent_at=now, last_status_code=code))
        return Attempt(sent=True, status_code=code)
    gave_up = claimed.attempts >= MAX_ATTEMPTS or not claimed.url
    retry_at = None if gave_up else now + backoff(claimed.attempts)
    session.execute(
        pending.values(
            status="failed" if gave_up else "pending",
            last_status_code=code,
            last_error=(error or "")[:500] or None,
            next_attempt_at=retry_at or now,
        )
    )
    log.warning("webhook delivery %s failed (%s): %s", delivery_id, code, error)
    return Attempt(sent=False, status_code=code, retry_at=retry_at)
