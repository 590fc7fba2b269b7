"""How the portal hands over a message it must send (magic link, confirmation link or code).

The campaign engine will plug in real email and SMS sending. Until then :class:`LogCourier`
writes the message to the log: in development with its link or code, so a developer can
click it; in production without them (a secret must not sit in logs), as a warning that
nothing was sent. Tests replace ``registry["portal.courier"]`` with a recorder.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Protocol

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PortalMessage:
    kind: str  # magic_link | confirm_email | confirm_sms
    customer_id: uuid.UUID
    channel: str  # email | sms
    to: str
    locale: str
    link: str | None = None
    code: str | None = None


class Courier(Protocol):
    def send(self, message: PortalMessage) -> None: ...


def mask(address: str) -> str:
    """``marie@example.com`` -> ``m***@example.com``; ``+33612345678`` -> ``+336******78``."""
    if "@" in address:
        local, _, domain = address.partition("@")
        return f"{local[:1]}***@{domain}"
    return address[:4] + "*" * max(len(address) - 6, 0) + address[-2:]


class LogCourier:
    def __init__(self, *, production: bool) -> None:
        self.production = production

    def send(self, message: PortalMessage) -> None:
        if self.production:
            log.warning(
                "no %s sender configured: %s for customer %s not sent",
                message.channel,
                message.kind,
                message.customer_id,
            )
            return
        log.info(
            "outbox %s %s to %s (customer %s): %s",
            message.channel,
            message.kind,
            mask(message.to),
            message.customer_id,
            message.link or message.code,
        )
