"""The embedded default: messages are kept in the database outbox, in the same transaction.

Because the outbox row is written in the transaction that marks the delivery sent, and
one delivery has at most one outbox row (unique), this transport is exactly-once.
"""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from ..models import OutboxMessage
from . import Outgoing, Sent


class OutboxTransport:
    in_database = True

    def send(self, session: Session, messages: list[Outgoing], *, test: bool = False) -> list[Sent]:
        """Keep the messages; ``test``: a test-send, tied to no delivery."""
        rows = [
            OutboxMessage(
                delivery_id=None if test else uuid.UUID(str(m.delivery_id)),
                channel=m.channel,
                to_address=m.to,
                subject=m.subject,
                body_text=m.text,
                body_html=m.html,
                headers=dict(m.headers),
            )
            for m in messages
        ]
        session.add_all(rows)
        session.flush()
        return [
            Sent(m.delivery_id, f"outbox:{row.id}") for m, row in zip(messages, rows, strict=True)
        ]
