"""Dramatiq actors of the campaign engine (thin: ids in, a service call, ids out).

Broker messages carry only delivery ids. :func:`tick` is what the scheduler runs every
few seconds: start scheduled campaigns, queue due deliveries, hand out again those a
lost broker message left ``queued``, and enqueue their ids once that has committed.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from prefcenter import tasks
from prefcenter.broker import actor
from prefcenter.consent_settings import ConsentSettings
from prefcenter.models import utcnow
from prefcenter.settings import as_bool

from . import dispatch, dormancy, services
from .channels.outbox import OutboxTransport
from .channels.sendgrid import SendGridTransport

log = logging.getLogger(__name__)

# Delivery ids per broker message. The send-time re-check costs about as much to set up
# (the policy statement, the batch's time zones) for a few ids as for thousands, so a
# message carries two SendGrid calls' worth (a call takes up to 1,000 personalizations;
# the transport splits).
BATCH = 2000
PER_TICK = 50_000
STUCK_AFTER = dt.timedelta(minutes=10)
UNCONFIRMED_AFTER = dt.timedelta(hours=1)


def build_dispatcher(settings: Mapping[str, Any]) -> dispatch.Dispatcher:
    """Consent settings, signed links and one transport per channel, from the settings."""
    sender = email.utils.parseaddr(str(settings.get("prefcenter.email.from", "")))[1]
    domain = sender.partition("@")[2]
    links = dispatch.Links(
        base_url=str(settings.get("prefcenter.public_url", "http://localhost:6543")),
        secret=str(settings["prefcenter.secret"]),
        unsubscribe_mailto=f"unsubscribe@{domain}" if domain else None,
    )
    outbox = OutboxTransport()
    transports: dict[str, Any] = {channel: outbox for channel in ("email", "sms", "phone", "post")}
    if settings.get("prefcenter.email.transport") == "sendgrid":
        transports["email"] = SendGridTransport(
            str(settings["sendgrid.api_key"]),
            str(settings.get("prefcenter.email.from", "")),
            host=str(settings.get("sendgrid.host") or "https://api.sendgrid.com"),
            sandbox_mode=as_bool(settings.get("sendgrid.sandbox_mode", "false")),
        )
    return dispatch.Dispatcher(ConsentSettings.from_settings(settings), links, transports)


def build_launch_settings(settings: Mapping[str, Any], cfg: ConsentSettings) -> services.Settings:
    days = int(settings.get("prefcenter.dormancy.days", services.segments.DEFAULT_DORMANCY_DAYS))
    return services.Settings(cfg, days)


# Built once per configuration (tasks.use_settings makes a new settings object each time),
# not once per message: the transports keep their HTTP client between batches.
_built: tuple[Mapping[str, Any], dispatch.Dispatcher] | None = None


def _dispatcher() -> dispatch.Dispatcher:
    global _built
    settings = tasks.current_settings()
    if _built is None or _built[0] is not settings:
        _built = (settings, build_dispatcher(settings))
    return _built[1]


def _launch_settings() -> services.Settings:
    return build_launch_settings(tasks.current_settings(), _dispatcher().cfg)


@actor(max_retries=3, min_backoff=5_000, time_limit=600_000, queue_name="campaigns")
def dispatch_deliveries(delivery_ids: list[str]) -> None:
    """Send these deliveries (those still ``queued``; running it twice sends nothing twice)."""
    # The ids as they came (text): the statements take them as one array literal.
    result = dispatch.dispatch_in_steps(tasks.unit_of_work, delivery_ids, utcnow(), _dispatcher())
    log.info("dispatched %d deliveries: %s", len(delivery_ids), result)


def enqueue(delivery_ids: list[uuid.UUID], *, batch: int = BATCH) -> None:
    for start in range(0, len(delivery_ids), batch):
        dispatch_deliveries.send([str(i) for i in delivery_ids[start : start + batch]])


def tick(now: dt.datetime | None = None) -> int:
    """One scheduler pass; returns how many deliveries it handed to the workers."""
    now = now or utcnow()
    launch = _launch_settings()
    with tasks.unit_of_work() as session:
        if dormancy.due_today(session, now):  # once a day: fallow, programs, sunset, rate
            report = dormancy.run_daily(session, now, launch.cfg, launch.dormancy_days)
            log.info("relational fallow for %s: %s", now.date(), report)
        services.start_scheduled(session, now, launch)
        ids = dispatch.requeue_stuck(session, now, older_than=STUCK_AFTER)
        dispatch.flag_unconfirmed(session, now, older_than=UNCONFIRMED_AFTER)
        # Bounded per pass so memory stays flat; the next pass takes the rest.
        ids.extend(dispatch.queue_due(session, now, limit=PER_TICK))
        services.complete_finished(session, now)
    # Only now that the transaction has committed do the broker messages go out.
    enqueue(ids)
    return len(ids)
