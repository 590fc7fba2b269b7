"""Transports: how a rendered message leaves (outbox, SendGrid, SMS provider, call list, print)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from typing import Any, Protocol


@dataclasses.dataclass(frozen=True, eq=False)
class SharedBody:
    """A text (and HTML) body common to many messages, each one's values left as keys.

    A message's own ``text`` / ``html`` are this body with its ``substitutions`` put in:
    a provider may take the body once per call and the substitutions per message.
    Compared by identity: messages rendered from the same content share one object.
    """

    text: str
    html: str | None


@dataclasses.dataclass(frozen=True)
class Outgoing:
    """One rendered message to one address, tied to its delivery (its id as a UUID or
    as its text: dispatch carries a batch's ids as text)."""

    delivery_id: uuid.UUID | str
    channel: str
    to: str
    subject: str | None
    text: str
    html: str | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    categories: tuple[str, ...] = ()
    shared: SharedBody | None = None
    substitutions: Mapping[str, str] | None = None  # key in ``shared`` -> this one's value


@dataclasses.dataclass(frozen=True)
class Sent:
    delivery_id: uuid.UUID | str
    provider_message_id: str | None = None
    error: str | None = None  # set when the provider refused this message for good
    retry_after: float | None = None  # set when the provider could not take it now

    @property
    def ok(self) -> bool:
        return self.error is None and self.retry_after is None


class Transport(Protocol):
    # True when sending is a database write in the caller's transaction (exactly once);
    # False for a provider call, made outside any transaction between two commits.
    in_database: bool

    def send(self, session: Any, messages: list[Outgoing]) -> list[Sent]: ...
