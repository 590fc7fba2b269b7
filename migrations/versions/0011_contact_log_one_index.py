"""contact_log: one index per customer, not two

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01

``contact_log`` had two indexes that both begin with ``customer_id``: the unique
``(customer_id, message_ref)`` (one contact per customer per message) and
``ix_contact_log_customer_at`` ``(customer_id, at)``. Every read by customer (the
per-customer policy's counted contacts, ``policy_state``'s recomputation, the export)
is served by the unique one: a customer has few contacts, read and filtered by instant
in one index range. The second index only cost its upkeep: a campaign planned over a
million customers inserts 400,000 reservations, and its maintenance was 0.6 s of the
3.6 s that insert took. It is dropped.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("contact_log", schema=None) as batch_op:
        batch_op.drop_index("ix_contact_log_customer_at")


def downgrade() -> None:
    with op.batch_alter_table("contact_log", schema=None) as batch_op:
        batch_op.create_index("ix_contact_log_customer_at", ["customer_id", "at"], unique=False)
