"""The webhook actor: thin, it loads nothing but an id and calls the webhooks service."""

from __future__ import annotations

import os
import uuid

from . import tasks
from .broker import actor
from .models import utcnow
from .services import webhooks

_server_secret: str | None = None
_allow_private = False


def configure(server_secret: str, *, allow_private_targets: bool = False) -> None:
    """The server secret the signing secrets are derived from, and whether endpoints may be
    private addresses (development only); the app sets both."""
    global _server_secret, _allow_private
    _server_secret = server_secret
    _allow_private = allow_private_targets


def _secret() -> str:
    secret = _server_secret or os.environ.get("PREFCENTER_SECRET")
    if not secret:
        raise RuntimeError("webhook_tasks needs the server secret (PREFCENTER_SECRET)")
    return secret


# Retries are ours (recorded in the delivery row, with back-off), not Dramatiq's.
@actor(max_retries=0, time_limit=60_000)
def deliver_webhook(delivery_id: str) -> None:
    attempt = webhooks.attempt_delivery(
        tasks.unit_of_work,
        uuid.UUID(delivery_id),
        server_secret=_secret(),
        now=utcnow(),
        allow_private=_allow_private,
    )
    if attempt.retry_at is not None:
        delay_ms = max(0, int((attempt.retry_at - utcnow()).total_seconds() * 1000))
        deliver_webhook.send_with_options(args=(delivery_id,), delay=delay_ms)
