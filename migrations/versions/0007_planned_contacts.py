"""planned contacts: planning adds its reservations to policy_state in one pass

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

* ``policy_state_add_contacts(ids, channels, ats, topic)`` gives each customer of
  ``ids`` (distinct) one more counted contact: on ``channels[i]`` at ``ats[i]`` on
  ``topic``, merged into their sorted arrays; customers without a row get one, computed
  from ``contact_log``. Campaign planning calls it with its staged decisions after
  inserting the reservations, instead of the ``contact_log`` INSERT trigger, which has
  to group its transition table by customer first (the reservation insert of a
  million-customer plan: about 7 s of its 13 s).
* The INSERT trigger on ``contact_log`` does nothing in a transaction where
  ``prefcenter.policy_state_added`` is ``on``; planning sets it (``SET LOCAL``, so only
  its own transaction) for its one reservation insert and clears it right after.
* The foreign key ``contact_log.topic_id`` → ``topics`` is dropped: its per-row check
  took about a second of those 13 s, and topics are never deleted (they are
  deactivated), so it guarded nothing.

Nothing changes on SQLite, which keeps no ``policy_state``.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SKIP_SETTING = "prefcenter.policy_state_added"
C_ORDER = ' COLLATE "C"'  # byte order, whatever the database's collation (0005)
CHANNELS = ("email", "sms", "phone", "post")


def _merged(column: str, value: str, collate: str = "") -> str:
    """``column`` with ``value`` inserted at its place (the column is sorted); as 0005."""
    k = f"width_bucket({value}{collate}, s.{column})"
    return (
        f"CASE WHEN s.{column} IS NULL THEN ARRAY[{value}]"
        f" ELSE array_cat(s.{column}[1:{k}], array_cat(ARRAY[{value}], s.{column}[{k} + 1:])) END"
    )


# A contact as topic and instant in one text that sorts by both (0005, prefcenter.policy).
_TOPIC_KEY = (
    "(topic::text || ' ' || to_char(one.at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'))"
)

_ADD_CONTACTS = (
    "CREATE FUNCTION policy_state_add_contacts("
    "ids uuid[], channels text[], ats timestamptz[], topic uuid) RETURNS void"
    " LANGUAGE plpgsql AS $$ DECLARE missing uuid[]; BEGIN"
    " WITH updated AS (UPDATE policy_state AS s SET"
    f" counted_at = {_merged('counted_at', 'one.at')},"
    " counted_topic_at = CASE WHEN topic IS NULL THEN s.counted_topic_at"
    f" ELSE {_merged('counted_topic_at', _TOPIC_KEY, C_ORDER)} END,"
    + ", ".join(
        f" counted_{ch}_at = CASE WHEN one.channel <> '{ch}' THEN s.counted_{ch}_at"
        f" ELSE {_merged(f'counted_{ch}_at', 'one.at')} END"
        for ch in CHANNELS
    )
    + " FROM unnest(ids, channels, ats) AS one(customer_id, channel, at)"
    " WHERE s.customer_id = one.customer_id RETURNING s.customer_id)"
    # The customers without a row (no consent, preference nor contact before): two
    # hashes of the ids, cheaper than an anti-join with the whole table.
    " SELECT ARRAY(SELECT unnest(ids) EXCEPT ALL SELECT customer_id FROM updated) INTO missing;"
    " IF cardinality(missing) > 0 THEN PERFORM policy_state_refresh_contacts(missing); END IF;"
    " END $$"
)


def upgrade() -> None:
    with op.batch_alter_table("contact_log", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("fk_contact_log_topic_id_topics"), type_="foreignkey")
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_ADD_CONTACTS)
    op.execute("DROP TRIGGER policy_state_contact_log_insert ON contact_log")
    op.execute(
        "CREATE TRIGGER policy_state_contact_log_insert AFTER INSERT ON contact_log"
        " REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT"
        f" WHEN (coalesce(current_setting('{SKIP_SETTING}', true), '') <> 'on')"
        " EXECUTE FUNCTION policy_state_contact_log_insert()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER policy_state_contact_log_insert ON contact_log")
        op.execute(
            "CREATE TRIGGER policy_state_contact_log_insert AFTER INSERT ON contact_log"
            " REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT"
            " EXECUTE FUNCTION policy_state_contact_log_insert()"
        )
        op.execute("DROP FUNCTION policy_state_add_contacts(uuid[], text[], timestamptz[], uuid)")
    with op.batch_alter_table("contact_log", schema=None) as batch_op:
        batch_op.create_foreign_key(
            op.f("fk_contact_log_topic_id_topics"), "topics", ["topic_id"], ["id"]
        )
