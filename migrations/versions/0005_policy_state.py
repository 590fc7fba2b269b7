"""policy_state: one narrow row per customer for the set-based contact policy

A copy of the channel consents, the contact preference and the counted contacts
(marketing, sent or reserved: the instants the caps count) of each customer. On
PostgreSQL, statement-level triggers on ``channel_consents``, ``contact_preferences``
and ``contact_log``, and a row-level one on the customers' address HMACs, recompute
the rows of the customers a statement touched, in that statement's transaction,
whoever writes (the services, set-based planning, dispatch, the webhook, imports);
``policy_state_rebuild()`` recomputes every row (the backfill, and bulk loads that
disable the triggers, or a TRUNCATE, which no trigger here follows). SQLite does not
keep the table.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import prefcenter.models.base

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNELS = ("email", "sms", "phone", "post")
INSTANTS = sa.JSON().with_variant(postgresql.ARRAY(sa.DateTime(timezone=True)), "postgresql")
TOPIC_INSTANTS = sa.JSON().with_variant(postgresql.ARRAY(sa.Text()), "postgresql")

CHOICE_COLUMNS = [
    *(f"{ch}_{what}" for ch in CHANNELS for what in ("status", "confirmed")),
    "frequency",
    "channel_order",
    "contact_start",
    "contact_end",
    "paused_until",
]
CONTACT_COLUMNS = ["counted_at", "counted_topic_at", *(f"counted_{ch}_at" for ch in CHANNELS)]
# The contacts the caps count (prefcenter.policy.COUNTED_STATUSES, marketing only).
COUNTED = "kind = 'marketing' AND status IN ('reserved', 'sent')"


# The customers' column each channel's confirmed address is compared with (none for post).
ADDRESS_HMAC = {"email": "email_hmac", "sms": "phone_hmac", "phone": "phone_hmac"}


def _confirmed(channel: str) -> str:
    """Is the channel's confirmed address the customer's current one (NULL: no consent)."""
    hmac = f"c.{ADDRESS_HMAC[channel]}" if channel in ADDRESS_HMAC else "NULL"
    return (
        f"CASE WHEN {channel}.id IS NOT NULL"
        f" THEN coalesce({channel}.confirmed_hmac = {hmac}, false) END"
    )


def _choices_select(customers: str, contacts: str | None = None) -> str:
    """The consent and preference columns of the customers ``customers`` selects.

    With ``contacts`` (a subquery of the contact columns per customer), those too, for
    the customers that have any of them.
    """
    columns = ", ".join(
        [
            "c.id",
            *(f"{ch}.status, {_confirmed(ch)}" for ch in CHANNELS),
            "p.frequency, p.channel_order, p.contact_start, p.contact_end, p.paused_until",
            *([f"k.{c}" for c in CONTACT_COLUMNS] if contacts else []),
        ]
    )
    joins = " ".join(
        f"LEFT JOIN channel_consents {ch} ON {ch}.customer_id = c.id AND {ch}.channel = '{ch}'"
        for ch in CHANNELS
    )
    select = (
        f"SELECT {columns} FROM customers c {joins}"
        " LEFT JOIN contact_preferences p ON p.customer_id = c.id"
    )
    if contacts is None:
        return f"{select} WHERE c.id IN ({customers})"
    anything = " OR ".join(f"{t}.customer_id IS NOT NULL" for t in ("k", "p", *CHANNELS))
    return (
        f"{select} LEFT JOIN ({contacts}) AS k(customer_id, {', '.join(CONTACT_COLUMNS)})"
        f" ON k.customer_id = c.id WHERE {anything}"
    )


def _contacts_select(customers: str) -> str:
    """The counted contacts of the customers ``customers`` selects, as sorted arrays."""
    per_channel = ", ".join(
        f"array_agg(l.at ORDER BY l.at) FILTER (WHERE l.channel = '{ch}')" for ch in CHANNELS
    )
    return (
        "SELECT c.id, k.* FROM customers c LEFT JOIN LATERAL ("
        f" SELECT array_agg(l.at ORDER BY l.at), {_topic_keys('l.')},"
        f" {per_channel} FROM contact_log l WHERE l.customer_id = c.id"
        f" AND l.{COUNTED.replace(' AND ', ' AND l.')}"
        f") k ON true WHERE c.id IN ({customers})"
    )


C_ORDER = ' COLLATE "C"'  # byte order, whatever the database's collation


def _topic_key(alias: str) -> str:
    """A contact as topic and instant in one text that sorts by both (prefcenter.policy)."""
    return (
        f"({alias}topic_id::text || ' '"
        f" || to_char({alias}at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'))"
    )


def _topic_keys(alias: str) -> str:
    key = _topic_key(alias)
    return f"array_agg({key} ORDER BY {key}{C_ORDER}) FILTER (WHERE {alias}topic_id IS NOT NULL)"


def _merged(column: str, value: str, collate: str = "") -> str:
    """``column`` with ``value`` inserted at its place (the column is sorted)."""
    k = f"width_bucket({value}{collate}, s.{column})"
    return (
        f"CASE WHEN s.{column} IS NULL THEN ARRAY[{value}]"
        f" ELSE array_cat(s.{column}[1:{k}], array_cat(ARRAY[{value}], s.{column}[{k} + 1:])) END"
    )


def _merged_channel(channel: str) -> str:
    column = f"counted_{channel}_at"
    return (
        f"{column} = CASE WHEN one.channel <> '{channel}' THEN s.{column}"
        f" ELSE {_merged(column, 'one.at')} END"
    )


# contact_log INSERT, the hot path (planning reserves a million contacts in one statement):
# a customer's one new counted contact is merged into their sorted arrays (two binary
# searches, no sort, no read of contact_log); the others are recomputed.
_CONTACTS_INSERTED = (
    "WITH one AS (SELECT customer_id, (array_agg(at))[1] AS at,"
    " (array_agg(topic_id))[1] AS topic_id, (array_agg(channel))[1] AS channel"
    f" FROM new_rows WHERE {COUNTED} GROUP BY customer_id HAVING count(*) = 1)"
    f" UPDATE policy_state AS s SET counted_at = {_merged('counted_at', 'one.at')},"
    " counted_topic_at = CASE WHEN one.topic_id IS NULL THEN s.counted_topic_at"
    f" ELSE {_merged('counted_topic_at', _topic_key('one.'), C_ORDER)} END,"
    f" {', '.join(_merged_channel(ch) for ch in CHANNELS)}"
    " FROM one WHERE s.customer_id = one.customer_id;"
    " PERFORM policy_state_refresh_contacts(ARRAY("
    f"SELECT customer_id FROM new_rows WHERE {COUNTED} GROUP BY customer_id HAVING count(*) > 1"
    f" UNION ALL SELECT n.customer_id FROM new_rows n WHERE n.{COUNTED.replace(' AND ', ' AND n.')}"
    " AND NOT EXISTS (SELECT FROM policy_state s WHERE s.customer_id = n.customer_id)));"
)


def _upsert(columns: list[str], select: str) -> str:
    names = ", ".join(["customer_id", *columns])
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns)
    return (
        f"INSERT INTO policy_state ({names}) {select}"
        f" ON CONFLICT (customer_id) DO UPDATE SET {updates}"
    )


def _postgres_upgrade() -> None:
    op.execute(
        "CREATE FUNCTION policy_state_refresh_choices(ids uuid[]) RETURNS void"
        f" LANGUAGE sql AS $$ {_upsert(CHOICE_COLUMNS, _choices_select('SELECT unnest(ids)'))} $$"
    )
    op.execute(
        "CREATE FUNCTION policy_state_refresh_contacts(ids uuid[]) RETURNS void"
        f" LANGUAGE sql AS $$ {_upsert(CONTACT_COLUMNS, _contacts_select('SELECT unnest(ids)'))} $$"
    )
    # Everybody in one INSERT (the backfill; bulk loads call it after disabling the
    # triggers): only the customers with a consent, a preference or a counted contact.
    contacts = ", ".join(
        [
            "array_agg(at ORDER BY at)",
            _topic_keys(""),
            *(f"array_agg(at ORDER BY at) FILTER (WHERE channel = '{ch}')" for ch in CHANNELS),
        ]
    )
    everybody = _choices_select(
        "",
        f"SELECT customer_id, {contacts} FROM contact_log WHERE {COUNTED} GROUP BY customer_id",
    )
    op.execute(
        "CREATE FUNCTION policy_state_rebuild() RETURNS void LANGUAGE sql AS $$"
        " DELETE FROM policy_state;"
        f" INSERT INTO policy_state (customer_id, {', '.join(CHOICE_COLUMNS)},"
        f" {', '.join(CONTACT_COLUMNS)}) {everybody} $$"
    )
    for table, refresh, which in (
        ("channel_consents", "policy_state_refresh_choices", ""),
        ("contact_preferences", "policy_state_refresh_choices", ""),
        # Alerts and released contacts change no count.
        ("contact_log", "policy_state_refresh_contacts", f" WHERE {COUNTED}"),
    ):
        # One function per table and event: a trigger with transition tables has one event.
        for event, rows in (("INSERT", "new"), ("UPDATE", "new"), ("DELETE", "old")):
            name = f"policy_state_{table}_{event.lower()}"
            ids = f"SELECT customer_id FROM {rows}_rows{which}"
            if event == "UPDATE":
                ids += f" UNION SELECT customer_id FROM old_rows{which}"
            body = f"PERFORM {refresh}(ARRAY({ids}));"
            if table == "contact_log" and event == "INSERT":
                body = _CONTACTS_INSERTED
            op.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$"
                f" BEGIN {body} RETURN NULL; END $$"
            )
            referencing = (
                "NEW TABLE AS new_rows OLD TABLE AS old_rows"
                if event == "UPDATE"
                else f"{rows.upper()} TABLE AS {rows}_rows"
            )
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING {referencing}"
                f" FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
            )
    # A changed address is no longer the confirmed one (row-level: addresses change one by one).
    op.execute(
        "CREATE FUNCTION policy_state_customers_update() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN PERFORM policy_state_refresh_choices(ARRAY[NEW.id]); RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER policy_state_customers_update AFTER UPDATE OF email_hmac, phone_hmac"
        " ON customers FOR EACH ROW WHEN (OLD.email_hmac IS DISTINCT FROM NEW.email_hmac"
        " OR OLD.phone_hmac IS DISTINCT FROM NEW.phone_hmac)"
        " EXECUTE FUNCTION policy_state_customers_update()"
    )
    op.execute("SELECT policy_state_rebuild()")


def upgrade() -> None:
    op.create_table(
        "policy_state",
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        *(
            column
            for ch in CHANNELS
            for column in (
                sa.Column(f"{ch}_status", sa.String(length=16), nullable=True),
                sa.Column(f"{ch}_confirmed", sa.Boolean(), nullable=True),
            )
        ),
        sa.Column("frequency", sa.String(length=16), nullable=True),
        sa.Column("channel_order", sa.String(length=40), nullable=True),
        sa.Column("contact_start", sa.SmallInteger(), nullable=True),
        sa.Column("contact_end", sa.SmallInteger(), nullable=True),
        sa.Column("paused_until", prefcenter.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("counted_at", INSTANTS, nullable=True),
        sa.Column("counted_topic_at", TOPIC_INSTANTS, nullable=True),
        *(sa.Column(f"counted_{ch}_at", INSTANTS, nullable=True) for ch in CHANNELS),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_policy_state_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_policy_state")),
        # Room on each page for the updated versions of its rows (HOT updates: the
        # primary key index is not touched when a reservation changes a row).
        postgresql_with={"fillfactor": 70},
    )
    if op.get_bind().dialect.name == "postgresql":
        _postgres_upgrade()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("channel_consents", "contact_preferences", "contact_log"):
            for event in ("insert", "update", "delete"):
                name = f"policy_state_{table}_{event}"
                op.execute(f"DROP TRIGGER {name} ON {table}")
                op.execute(f"DROP FUNCTION {name}()")
        op.execute("DROP TRIGGER policy_state_customers_update ON customers")
        op.execute("DROP FUNCTION policy_state_customers_update()")
        op.execute("DROP FUNCTION policy_state_rebuild()")
        op.execute("DROP FUNCTION policy_state_refresh_contacts(uuid[])")
        op.execute("DROP FUNCTION policy_state_refresh_choices(uuid[])")
    op.drop_table("policy_state")
