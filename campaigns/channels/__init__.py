"""Transports: how a rendered message leaves (outbox, SendGrid, SMS provider, call list, print)."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any, Protocol


@dataclasses.dataclass(frozen=True)
class Outgoing:
    """One rendered message to one address, tied to its delivery."""

    delivery_id: uuid.UUID
    channel: str
    to: str
    subject: str | None
    text: str
    html: str | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    categories: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Sent:
    delivery_id: uuid.UUID
    provider_message_id: str | None = None
    error: str | None = None  # set when the provider refused this message for good

    @property
    def ok(self) -> bool:
        return self.error is None


class Transport(Protocol):
    def send(self, session: Any, messages: list[Outgoing]) -> list[Sent]: ...
