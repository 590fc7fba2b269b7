"""Signed links a message carries: to the customer's portal, and to unsubscribe.

Tokens (prefcenter.tokens) carry the customer's id and, for unsubscribe links, a topic key
(None: all marketing). Never an address: links end up in logs and mailbox scanners.
"""

from __future__ import annotations

import datetime as dt
import uuid

from .. import tokens

PORTAL_PURPOSE = "portal"
UNSUBSCRIBE_PURPOSE = "unsubscribe"


def portal_token(secret: str, customer_id: uuid.UUID, *, hours: int, now: dt.datetime) -> str:
    return tokens.sign(
        secret, PORTAL_PURPOSE, {"c": str(customer_id)}, now + dt.timedelta(hours=hours)
    )


def read_portal_token(secret: str, token: str, *, now: dt.datetime) -> uuid.UUID:
    """The customer a portal link opens; tokens.TokenInvalid / TokenExpired otherwise."""
    payload = tokens.verify(secret, PORTAL_PURPOSE, token, now=now)
    try:
        return uuid.UUID(str(payload["c"]))
    except (KeyError, ValueError):
        raise tokens.TokenInvalid("not a portal token") from None


def unsubscribe_token(
    secret: str, customer_id: uuid.UUID, topic_key: str | None, *, days: int, now: dt.datetime
) -> str:
    """A link that unsubscribes from one topic, or (topic_key None) from all marketing."""
    return tokens.sign(
        secret,
        UNSUBSCRIBE_PURPOSE,
        {"c": str(customer_id), "t": topic_key},
        now + dt.timedelta(days=days),
    )


def read_unsubscribe_token(
    secret: str, token: str, *, now: dt.datetime
) -> tuple[uuid.UUID, str | None]:
    payload = tokens.verify(secret, UNSUBSCRIBE_PURPOSE, token, now=now)
    try:
        topic = payload.get("t")
        return uuid.UUID(str(payload["c"])), None if topic is None else str(topic)
    except (KeyError, ValueError):
        raise tokens.TokenInvalid("not an unsubscribe token") from None
