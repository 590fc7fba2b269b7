"""planned contacts: merged into policy_state straight from the staged rows

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

``policy_state_merged(sorted_array, value)`` is ``sorted_array`` with ``value`` inserted
at its place (timestamps; and texts in "C" order, as ``counted_topic_at`` keeps them):
0007's array merge as a SQL function of one expression, which PostgreSQL inlines into
the statement that calls it. Campaign planning now writes its reservations into
``policy_state`` with one ``INSERT … ON CONFLICT DO UPDATE`` from its staged rows built
on it (prefcenter.services.contacts.insert_staged_reservations), instead of calling
0007's ``policy_state_add_contacts`` with the rows aggregated into three arrays: that
form unnested the arrays, hashed the whole ``policy_state`` table to join them, found
the customers without a row with an ``EXCEPT ALL`` and recomputed each of those from
``contact_log``. ``policy_state_add_contacts`` stays, unused, for 0007's downgrade.

Nothing changes on SQLite, which keeps no ``policy_state``.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _merged(element: str, collate: str = "") -> str:
    k = f"width_bucket(v{collate}, a)"
    return (
        f"CREATE FUNCTION policy_state_merged(a {element}[], v {element})"
        f" RETURNS {element}[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$"
        " SELECT CASE WHEN a IS NULL THEN ARRAY[v]"
        f" ELSE array_cat(a[1:{k}], array_cat(ARRAY[v], a[{k} + 1:])) END $$"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_merged("timestamptz"))
    op.execute(_merged("text", ' COLLATE "C"'))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION policy_state_merged(timestamptz[], timestamptz)")
    op.execute("DROP FUNCTION policy_state_merged(text[], text)")
