"""``POST /webhooks/sendgrid/inbound``: SendGrid Inbound Parse posts mails sent to the
``mailto:`` unsubscribe address here (see :mod:`campaigns.inbound`).

Inbound Parse does not sign its posts: the URL configured at SendGrid carries basic
auth (``https://inbound:<sendgrid.inbound_parse_secret>@<host>/webhooks/sendgrid/inbound``).
Without that password: 401 and nothing changes.
"""

from __future__ import annotations

import binascii
import dataclasses
import logging
from base64 import b64decode
from typing import Any

from pyramid.httpexceptions import HTTPUnauthorized

from prefcenter.db import mark_changed
from prefcenter.models import utcnow

from .. import inbound

log = logging.getLogger(__name__)


def _password(request: Any) -> str | None:
    scheme, _, value = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return b64decode(value, validate=True).decode().partition(":")[2]
    except (binascii.Error, UnicodeDecodeError):
        return None


def sendgrid_inbound(request: Any) -> dict[str, Any]:
    settings: inbound.InboundSettings = request.registry["campaigns.inbound"]
    if not settings.allows(_password(request)):
        log.warning("SendGrid Inbound Parse post refused: wrong or missing password")
        raise HTTPUnauthorized(
            json_body={"error": "basic auth with sendgrid.inbound_parse_secret required"},
            headers={"WWW-Authenticate": 'Basic realm="prefcenter inbound"'},
        )
    outcome = inbound.unsubscribe_by_mail(
        request.dbsession, inbound.subject_of(request.POST), utcnow()
    )
    if outcome.unsubscribed:
        mark_changed(request.dbsession)
    log.info("inbound unsubscribe mail: %s", outcome.reason)
    return dataclasses.asdict(outcome)
