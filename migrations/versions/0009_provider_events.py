"""provider events: no per-row delivery check

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

The SendGrid webhook records each batch of 1,000 events in one ``INSERT … SELECT`` whose
delivery ids are themselves selected from ``deliveries`` in that statement (an event of
a message we did not send gets NULL), so the foreign key ``provider_events.delivery_id``
→ ``deliveries`` re-checked, row by row, what the statement had just read: about 7 ms of
the 90 to 100 ms a batch takes. Deliveries are never deleted (0008), so its ``ON DELETE SET
NULL`` had nothing to do either. It is dropped.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("provider_events", schema=None) as batch_op:
        batch_op.drop_constraint(
            op.f("fk_provider_events_delivery_id_deliveries"), type_="foreignkey"
        )


def downgrade() -> None:
    with op.batch_alter_table("provider_events", schema=None) as batch_op:
        batch_op.create_foreign_key(
            op.f("fk_provider_events_delivery_id_deliveries"),
            "deliveries",
            ["delivery_id"],
            ["id"],
            ondelete="SET NULL",
        )
