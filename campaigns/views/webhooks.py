"""``POST /webhooks/sendgrid``: SendGrid's signed event batches.

403 and nothing changed for a request that is not genuine and fresh; 200 once the batch
is committed. Any failure before the commit answers 5xx, so SendGrid sends it again.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from pyramid.httpexceptions import HTTPForbidden

from prefcenter.db import mark_changed
from prefcenter.models import utcnow

from .. import events

log = logging.getLogger(__name__)


def sendgrid_events(request: Any) -> dict[str, Any]:
    config = request.registry["campaigns.webhook"]
    now = utcnow()
    body = request.body
    try:
        events.verify(
            config.settings,
            body,
            request.headers.get(events.SIGNATURE_HEADER),
            request.headers.get(events.TIMESTAMP_HEADER),
            now,
        )
        batch = events.parse(body)
    except events.Rejected as exc:
        log.warning("SendGrid event webhook refused: %s", exc)
        raise HTTPForbidden(json_body={"error": str(exc)}) from None
    result = events.ingest_retrying(request.dbsession, batch, now, cfg=config.consent)
    # Core statements on the session's connection: tell the transaction there is work to commit.
    mark_changed(request.dbsession)
    request.dbsession.flush()  # a database error must surface here, as a 5xx, not after a 200
    return dataclasses.asdict(result)
