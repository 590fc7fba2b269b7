"""campaigns: campaigns, deliveries, outbox, provider events, dormancy and re-engagement

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import prefcenter.models.base

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dormancy_snapshots",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("dormancy_days", sa.Integer(), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.Column("dormant", sa.Integer(), nullable=False),
        sa.Column("computed_at", prefcenter.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_dormancy_snapshots")),
    )
    op.create_table(
        "campaigns",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("topic_id", sa.Uuid(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "marketing",
                "alert",
                name="campaign_kind",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column(
            "channels",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "segment",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "content",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("schedule_at", prefcenter.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("throttle_per_minute", sa.Integer(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "draft",
                "scheduled",
                "running",
                "paused",
                "completed",
                "cancelled",
                name="campaign_status",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column(
            "plan_counts",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("planned_at", prefcenter.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("completed_at", prefcenter.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", prefcenter.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", prefcenter.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "throttle_per_minute IS NULL OR throttle_per_minute > 0",
            name=op.f("ck_campaigns_throttle_positive"),
        ),
        sa.ForeignKeyConstraint(
            ["topic_id"], ["topics.id"], name=op.f("fk_campaigns_topic_id_topics")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    op.create_table(
        "reengagement_programs",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("topic_id", sa.Uuid(), nullable=False),
        sa.Column(
            "channels",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "steps",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "step_campaigns",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("sunset_after_days", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", prefcenter.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", prefcenter.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["topic_id"], ["topics.id"], name=op.f("fk_reengagement_programs_topic_id_topics")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reengagement_programs")),
        sa.UniqueConstraint("name", name=op.f("uq_reengagement_programs_name")),
    )
    op.create_table(
        "deliveries",
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column(
            "channel",
            sa.Enum(
                "email",
                "sms",
                "phone",
                "post",
                name="delivery_channel",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "planned",
                "deferred",
                "queued",
                "sending",
                "sent",
                "delivered",
                "opened",
                "clicked",
                "failed",
                "skipped",
                "cancelled",
                name="delivery_status",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("scheduled_at", prefcenter.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("provider_message_id", sa.String(length=200), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("queued_at", prefcenter.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("sent_at", prefcenter.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", prefcenter.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("opened_at", prefcenter.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "machine_opened_at", prefcenter.models.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("clicked_at", prefcenter.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", prefcenter.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", prefcenter.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_deliveries_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_deliveries_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint(
            "campaign_id", "customer_id", name=op.f("uq_deliveries_campaign_id_customer_id")
        ),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_deliveries_campaign_status", ["campaign_id", "status"], unique=False
        )
        batch_op.create_index(
            "ix_deliveries_status_scheduled_at", ["status", "scheduled_at"], unique=False
        )

    op.create_table(
        "reengagement_enrolments",
        sa.Column("program_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("enrolled_at", prefcenter.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "active",
                "reengaged",
                "sunset",
                "stopped",
                name="enrolment_status",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("reengaged_at", prefcenter.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", prefcenter.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_reengagement_enrolments_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["program_id"],
            ["reengagement_programs.id"],
            name=op.f("fk_reengagement_enrolments_program_id_reengagement_programs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reengagement_enrolments")),
        sa.UniqueConstraint(
            "program_id",
            "customer_id",
            name=op.f("uq_reengagement_enrolments_program_id_customer_id"),
        ),
    )
    with op.batch_alter_table("reengagement_enrolments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_reengagement_enrolments_due", ["program_id", "status", "enrolled_at"], unique=False
        )

    op.create_table(
        "outbox_messages",
        sa.Column("delivery_id", sa.Uuid(), nullable=True),
        sa.Column(
            "channel",
            sa.Enum(
                "email",
                "sms",
                "phone",
                "post",
                name="outbox_channel",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("to_address", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.String(length=500), nullable=True),
        sa.Column("body_text", sa.Text(), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=True),
        sa.Column(
            "headers",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", prefcenter.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_outbox_messages_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_messages")),
        sa.UniqueConstraint("delivery_id", name=op.f("uq_outbox_messages_delivery_id")),
    )
    with op.batch_alter_table("outbox_messages", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_messages_created_at", ["created_at"], unique=False)

    op.create_table(
        "provider_events",
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("delivery_id", sa.Uuid(), nullable=True),
        sa.Column("received_at", prefcenter.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_provider_events_delivery_id_deliveries"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_provider_events")),
    )
    with op.batch_alter_table("provider_events", schema=None) as batch_op:
        batch_op.create_index("ix_provider_events_received_at", ["received_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("provider_events", schema=None) as batch_op:
        batch_op.drop_index("ix_provider_events_received_at")

    op.drop_table("provider_events")
    with op.batch_alter_table("outbox_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_messages_created_at")

    op.drop_table("outbox_messages")
    with op.batch_alter_table("reengagement_enrolments", schema=None) as batch_op:
        batch_op.drop_index("ix_reengagement_enrolments_due")

    op.drop_table("reengagement_enrolments")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_status_scheduled_at")
        batch_op.drop_index("ix_deliveries_campaign_status")

    op.drop_table("deliveries")
    op.drop_table("reengagement_programs")
    op.drop_table("campaigns")
    op.drop_table("dormancy_snapshots")
