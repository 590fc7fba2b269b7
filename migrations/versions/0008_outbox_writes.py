"""outbox writes: no per-row campaign check on deliveries

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

Planning a million-customer campaign inserts some 400,000 deliveries in one statement;
measured on that insert (PostgreSQL 15, 405,770 rows, 4.4 s):

* the foreign key ``deliveries.campaign_id`` → ``campaigns`` checked each row against
  the campaign (an index probe and a key-share lock): 1.3 s. Deliveries are only
  written by planning for its own campaign, and campaigns are never deleted (they are
  cancelled), so it guarded nothing; it is dropped, as the customer keys were (0006).
* ``ix_deliveries_campaign_status`` (campaign, status) costs another 0.45 s of that
  insert but stays: the scheduler asks each minute whether a running campaign has any
  delivery left to send, which without it reads every delivery of the campaign.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("fk_deliveries_campaign_id_campaigns"), type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_foreign_key(
            op.f("fk_deliveries_campaign_id_campaigns"),
            "campaigns",
            ["campaign_id"],
            ["id"],
            ondelete="CASCADE",
        )
