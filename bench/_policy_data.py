"""Set-based generation of a realistic contact-policy data set (PostgreSQL and SQLite).

Everything is ``INSERT ... SELECT`` from a seed table of one row per customer with
independent uniform draws (``u_*`` columns), so a million customers load in seconds
and nothing passes through Python. The same statements run on both backends; only
a handful of expressions (series, random numbers, UUIDs, timestamp arithmetic)
differ and come from :class:`Dialect`. On PostgreSQL the tables' indexes and keys are
dropped during the load and rebuilt after it (read from the catalog), the triggers
that keep ``policy_state`` are off during the load and ``policy_state_rebuild()``
(migration 0005) fills it once after, then ``VACUUM (ANALYZE)``.

The shape (fractions are of all customers unless said otherwise):

* customers: email 92 %, phone 78 %, postal address 70 %, 0.3 % erased; HMACs are
  unique 64-hex strings; 8 IANA time zones (Paris 45 %, ... Sydney 3 %);
* contact_preferences for 80 %: frequency any 60 % / weekly 25 % / monthly 15 %,
  8 channel orders, 8 contact windows (default, 09-20, 08-22, all day, 22-08 and
  18-09 crossing midnight, ...), 3 % paused until later, 2 % paused in the past;
* channel_consents: email granted and confirmed for 60 % of those with an email,
  granted but confirmed for an old address 5 %, pending 15 %, refused 10 %, none 10 %;
  sms granted and confirmed 40 % of those with a phone, pending 10 %, refused 20 %;
  post refused 5 %, granted 20 %;
* topic_subscriptions: the benchmark topic subscribed 60 %, unsubscribed 10 %, with
  its own weekly / monthly cadence for 10 % / 5 %; a newsletter topic for 50 %;
* suppressions: 1 % of emails (hard bounce, complaint, manual), 0.5 % of phones for
  sms, 2 % phone opposition, 0.5 % postal, and 5,000 erased addresses of nobody;
* contact_log: 0-4 entries per customer (2 on average), 92 % sent or released over
  the last 40 days, 8 % reserved in the next 4 days; 60 % email, 25 % sms, 10 % post,
  5 % phone; 90 % marketing; 35 % on the benchmark topic;
* pressure_rules: at most 3 per 7 days and 1 per day on all channels, 4 sms per
  30 days (active), 1 email per day (inactive).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from prefcenter.models import PressureRule, Topic
from prefcenter.models.base import UTCDateTime

SEED_DRAWS = (
    "u_email",
    "u_phone",
    "u_post",
    "u_erased",
    "u_tz",
    "u_pref",
    "u_freq",
    "u_order",
    "u_hours",
    "u_pause",
    "u_c_email",
    "u_c_sms",
    "u_c_post",
    "u_sub",
    "u_tfreq",
    "u_news",
    "u_supp",
    "u_log",
)
LOG_DRAWS = ("r_channel", "r_topic", "r_kind", "r_when", "r_at", "r_status")

TIMEZONES = (  # cumulative share, zone
    (0.45, "Europe/Paris"),
    (0.60, "Europe/London"),
    (0.70, "Europe/Berlin"),
    (0.80, "America/New_York"),
    (0.86, "America/Los_Angeles"),
    (0.92, "America/Sao_Paulo"),
    (0.97, "Asia/Tokyo"),
    (1.01, "Australia/Sydney"),
)
CHANNEL_ORDERS = (
    (0.40, ""),
    (0.55, "email,sms"),
    (0.65, "sms,email"),
    (0.72, "email"),
    (0.80, "sms"),
    (0.87, "post,email,sms"),
    (0.93, "email,sms,phone,post"),
    (1.01, "sms,post"),
)
CONTACT_HOURS = (  # cumulative share, start, end (minutes after local midnight)
    (0.35, None, None),
    (0.55, 540, 1200),
    (0.65, 480, 1320),
    (0.75, 0, 1440),
    (0.82, 1320, 480),
    (0.90, 600, 1080),
    (0.95, 720, 840),
    (1.01, 1080, 540),
)
HAS_EMAIL = "(s.u_erased >= 0.003 AND s.u_email < 0.92)"
HAS_PHONE = "(s.u_erased >= 0.003 AND s.u_phone < 0.78)"
HAS_POST = "(s.u_erased >= 0.003 AND s.u_post < 0.70)"
ERASED = "(s.u_erased < 0.003)"
DAY = 86400


class Dialect:
    """The few expressions PostgreSQL and SQLite spell differently."""

    name = "postgresql"

    def seed_table(self) -> str:
        draws = ", ".join(f"{self.rand()} AS {d}" for d in SEED_DRAWS)
        return (
            "CREATE UNLOGGED TABLE bench_seed AS "
            f"SELECT n, {self.new_uuid('n')} AS id, {self.hex64('a', 'n')} AS email_hmac, "
            f"{self.hex64('b', 'n')} AS phone_hmac, {self.hex64('c', 'n')} AS postal_hmac, "
            f"{draws} FROM generate_series(1, :customers) AS g(n)"
        )

    def scratch_table(self, name: str) -> str:
        return f"CREATE UNLOGGED TABLE {name} AS "

    def rand(self) -> str:
        return "random()"

    def _hex8(self, expr: str) -> str:
        return f"lpad(to_hex(CAST({expr} AS bigint)), 8, '0')"

    def new_uuid(self, unique: str) -> str:
        """A random-looking UUID, unique by ``unique`` (gen_random_uuid() and md5() cost
        microseconds each on small machines: ten times what this does)."""
        return (
            f"CAST({self._hex8('floor(random() * 4294967296)')} || "
            f"lpad(to_hex(CAST({unique} AS bigint)), 24, '0') AS uuid)"
        )

    def hex64(self, tag: str, unique: str) -> str:
        """64 hex digits standing for an address HMAC: random prefix, unique suffix."""
        return (
            f"{self._hex8('floor(random() * 4294967296)')} || '{tag * 48}' || {self._hex8(unique)}"
        )

    def at(self, seconds: str) -> str:
        """The benchmark instant ``:at`` plus a number of seconds."""
        return f"(CAST(:at AS timestamptz) + ({seconds}) * interval '1 second')"

    def int_(self, expr: str) -> str:
        return f"CAST(floor({expr}) AS integer)"

    def empty_json(self) -> str:
        return "CAST('{}' AS jsonb)"


class SQLiteDialect(Dialect):
    name = "sqlite"

    def seed_table(self) -> str:
        draws = ", ".join(f"{self.rand()} AS {d}" for d in SEED_DRAWS)
        return (
            "CREATE TABLE bench_seed AS "
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < :customers) "
            f"SELECT n, {self.new_uuid('n')} AS id, {self.hex64('a', 'n')} AS email_hmac, "
            f"{self.hex64('b', 'n')} AS phone_hmac, {self.hex64('c', 'n')} AS postal_hmac, "
            f"{draws} FROM g"
        )

    def scratch_table(self, name: str) -> str:
        return f"CREATE TABLE {name} AS "

    def rand(self) -> str:
        return "((random() & 9007199254740991) / 9007199254740992.0)"

    def new_uuid(self, unique: str) -> str:
        # sa.Uuid on SQLite: 32 hex digits, no dashes.
        return "lower(hex(randomblob(16)))"

    def hex64(self, tag: str, unique: str) -> str:
        return "lower(hex(randomblob(32)))"

    def at(self, seconds: str) -> str:
        # UTCDateTime on SQLite: naive UTC text 'YYYY-MM-DD HH:MM:SS.ffffff'.
        return (
            "(strftime('%Y-%m-%d %H:%M:%S', :at, "
            f"CAST(CAST({seconds} AS integer) AS text) || ' seconds') || '.000000')"
        )

    def int_(self, expr: str) -> str:
        return f"CAST({expr} AS integer)"

    def empty_json(self) -> str:
        return "'{}'"


def dialect_for(engine: sa.Engine) -> Dialect:
    return SQLiteDialect() if engine.dialect.name == "sqlite" else Dialect()


def _case(draw: str, choices: tuple[tuple[float, str], ...]) -> str:
    whens = " ".join(f"WHEN {draw} < {share} THEN {value}" for share, value in choices)
    return f"CASE {whens} END"


def _quote(text: str | None) -> str:
    return "NULL" if text is None else "'" + text.replace("'", "''") + "'"


def shape() -> list[str]:
    """The shape bullets of this module's docstring, one line each (for the docs)."""
    text = (__doc__ or "").split("The shape", 1)[1]
    bullets = [" ".join(b.split()) for b in text.split("\n* ")[1:]]
    return [b.rstrip(";.") for b in bullets]


@dataclass
class BenchData:
    customers: int
    topic_id: uuid.UUID
    at: dt.datetime
    rows: dict[str, int]
    seconds: dict[str, float]

    @property
    def load_seconds(self) -> float:
        return sum(self.seconds.values())


def _statements(d: Dialect) -> list[tuple[str, str]]:
    """(table, SQL) in load order; parameters :at, :topic, :newsletter, :customers."""
    timezone = _case("s.u_tz", tuple((s, _quote(z)) for s, z in TIMEZONES))
    order = _case("s.u_order", tuple((s, _quote(o)) for s, o in CHANNEL_ORDERS))
    start = _case("s.u_hours", tuple((s, _quote_int(a)) for s, a, _ in CONTACT_HOURS))
    end = _case("s.u_hours", tuple((s, _quote_int(b)) for s, _, b in CONTACT_HOURS))
    stamp = d.at(str(-365 * DAY))
    now = d.at("0")

    customers = f"""
        INSERT INTO customers (id, external_id, email, phone, email_hmac, phone_hmac,
            postal_hmac, first_name, last_name, postal_line1, postal_code, city, country,
            locale, timezone, attributes, erased_at, created_at, updated_at)
        SELECT s.id, 'bench-' || s.n,
            CASE WHEN {HAS_EMAIL} THEN 'c' || s.n || '@example.com' END,
            CASE WHEN {HAS_PHONE} THEN '+336' || (10000000 + s.n) END,
            CASE WHEN {HAS_EMAIL} THEN s.email_hmac END,
            CASE WHEN {HAS_PHONE} THEN s.phone_hmac END,
            CASE WHEN {HAS_POST} THEN s.postal_hmac END,
            CASE WHEN NOT {ERASED} THEN 'Prénom' END,
            CASE WHEN NOT {ERASED} THEN 'Nom ' || s.n END,
            CASE WHEN {HAS_POST} THEN (s.n % 200 + 1) || ' rue de la Paix' END,
            CASE WHEN {HAS_POST} THEN CAST(75001 + s.n % 20 AS text) END,
            CASE WHEN {HAS_POST} THEN 'Paris' END,
            'FR',
            CASE WHEN s.u_tz < 0.45 THEN 'fr' ELSE 'en' END,
            {timezone}, {d.empty_json()},
            CASE WHEN {ERASED} THEN {d.at(str(-30 * DAY))} END,
            {stamp}, {stamp}
        FROM bench_seed s"""
    preferences = f"""
        INSERT INTO contact_preferences (customer_id, frequency, channel_order,
            contact_start, contact_end, paused_until, created_at, updated_at)
        SELECT s.id,
            CASE WHEN s.u_freq < 0.60 THEN 'any' WHEN s.u_freq < 0.85 THEN 'weekly'
                 ELSE 'monthly' END,
            {order}, {start}, {end},
            CASE WHEN s.u_pause < 0.03 THEN {d.at(str(20 * DAY))}
                 WHEN s.u_pause < 0.05 THEN {d.at(str(-5 * DAY))} END,
            {stamp}, {stamp}
        FROM bench_seed s WHERE s.u_pref < 0.80"""

    def consents(channel: str, number: int, has: str, statuses: str, confirmed: str) -> str:
        return f"""
        INSERT INTO channel_consents (id, customer_id, channel, status, source, mechanism,
            confirmed_hmac, granted_at, refused_at, confirmation_attempts, created_at,
            updated_at)
        SELECT {d.new_uuid(f"x.n * 4 + {number}")}, x.id, '{channel}', x.status, 'bench',
            CASE WHEN x.status = 'granted' THEN 'double_opt_in' END,
            x.confirmed_hmac,
            CASE WHEN x.status = 'granted' THEN {stamp} END,
            CASE WHEN x.status = 'refused' THEN {stamp} END,
            0, {stamp}, {stamp}
        FROM (SELECT s.n, s.id, {statuses} AS status, {confirmed} AS confirmed_hmac
              FROM bench_seed s WHERE {has}) x
        WHERE x.status IS NOT NULL"""

    email_consents = consents(
        "email",
        1,
        HAS_EMAIL,
        "CASE WHEN s.u_c_email < 0.65 THEN 'granted' WHEN s.u_c_email < 0.80 THEN 'pending' "
        "WHEN s.u_c_email < 0.90 THEN 'refused' END",
        "CASE WHEN s.u_c_email < 0.60 THEN s.email_hmac "
        "WHEN s.u_c_email < 0.65 THEN s.postal_hmac END",  # confirmed for an old address
    )
    sms_consents = consents(
        "sms",
        2,
        HAS_PHONE,
        "CASE WHEN s.u_c_sms < 0.40 THEN 'granted' WHEN s.u_c_sms < 0.50 THEN 'pending' "
        "WHEN s.u_c_sms < 0.70 THEN 'refused' END",
        "CASE WHEN s.u_c_sms < 0.40 THEN s.phone_hmac END",
    )
    post_consents = consents(
        "post",
        3,
        "1 = 1",
        "CASE WHEN s.u_c_post < 0.05 THEN 'refused' WHEN s.u_c_post < 0.25 THEN 'granted' END",
        "NULL",
    )
    subscriptions = f"""
        INSERT INTO topic_subscriptions (customer_id, topic_id, status, frequency,
            created_at, updated_at)
        SELECT s.id, :topic,
            CASE WHEN s.u_sub < 0.60 THEN 'subscribed' ELSE 'unsubscribed' END,
            CASE WHEN s.u_tfreq < 0.10 THEN 'weekly' WHEN s.u_tfreq < 0.15 THEN 'monthly' END,
            {stamp}, {stamp}
        FROM bench_seed s WHERE s.u_sub < 0.70
        UNION ALL
        SELECT s.id, :newsletter, 'subscribed', NULL, {stamp}, {stamp}
        FROM bench_seed s WHERE s.u_news < 0.50"""
    suppressions = f"""
        INSERT INTO suppressions (id, channel, address_hmac, reason, note, created_at)
        SELECT {d.new_uuid("x.n * 8 + x.branch")}, x.channel, x.address_hmac, x.reason,
            'bench', {stamp}
        FROM (
            SELECT s.n, 1 AS branch, 'email' AS channel, s.email_hmac AS address_hmac,
                CASE WHEN s.u_supp < 0.005 THEN 'hard_bounce'
                     WHEN s.u_supp < 0.008 THEN 'spam_complaint' ELSE 'manual' END AS reason
            FROM bench_seed s WHERE {HAS_EMAIL} AND s.u_supp < 0.01
            UNION ALL
            SELECT s.n, 2, 'sms', s.phone_hmac, 'manual'
            FROM bench_seed s WHERE {HAS_PHONE} AND s.u_supp >= 0.01 AND s.u_supp < 0.015
            UNION ALL
            SELECT s.n, 3, 'phone', s.phone_hmac, 'phone_opposition'
            FROM bench_seed s WHERE {HAS_PHONE} AND s.u_supp >= 0.015 AND s.u_supp < 0.035
            UNION ALL
            SELECT s.n, 4, 'post', s.postal_hmac, 'manual'
            FROM bench_seed s WHERE {HAS_POST} AND s.u_supp >= 0.035 AND s.u_supp < 0.04
            UNION ALL
            SELECT s.n, 5, 'email', {d.hex64("d", "s.n")}, 'erased'
            FROM bench_seed s WHERE s.n <= 5000
        ) x"""
    draws = ", ".join(f"{d.rand()} AS {r}" for r in LOG_DRAWS)
    log_seed = (
        d.scratch_table("bench_log_seed")
        + f"""SELECT s.id AS customer_id, s.n, k.k, {draws}
        FROM bench_seed s
        JOIN (SELECT 1 AS k UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4) k
          ON k.k <= {d.int_("s.u_log * 5")}"""
    )
    future = "r.r_when < 0.08"
    contact_log = f"""
        INSERT INTO contact_log (id, customer_id, channel, topic_id, kind, at, status,
            message_ref, created_at, updated_at)
        SELECT {d.new_uuid("r.n * 8 + r.k")}, r.customer_id,
            CASE WHEN r.r_channel < 0.60 THEN 'email' WHEN r.r_channel < 0.85 THEN 'sms'
                 WHEN r.r_channel < 0.95 THEN 'post' ELSE 'phone' END,
            CASE WHEN r.r_topic < 0.35 THEN :topic WHEN r.r_topic < 0.80 THEN :newsletter END,
            CASE WHEN r.r_kind < 0.90 THEN 'marketing' ELSE 'alert' END,
            CASE WHEN {future} THEN {d.at(f"r.r_at * {4 * DAY}")}
                 ELSE {d.at(f"-r.r_at * {40 * DAY}")} END,
            CASE WHEN {future} THEN 'reserved' WHEN r.r_status < 0.95 THEN 'sent'
                 ELSE 'released' END,
            'bench:' || r.n || ':' || r.k,
            {now}, {now}
        FROM bench_log_seed r"""
    return [
        ("customers", customers),
        ("contact_preferences", preferences),
        ("channel_consents (email)", email_consents),
        ("channel_consents (sms)", sms_consents),
        ("channel_consents (post)", post_consents),
        ("topic_subscriptions", subscriptions),
        ("suppressions", suppressions),
        ("(contact_log draws)", log_seed),
        ("contact_log", contact_log),
    ]


def _quote_int(value: int | None) -> str:
    return "NULL" if value is None else str(value)


TABLES = (
    "customers",
    "contact_preferences",
    "channel_consents",
    "topic_subscriptions",
    "suppressions",
    "contact_log",
    "pressure_rules",
    "topics",
    "policy_state",
)


LOADED = TABLES[:6]


@contextlib.contextmanager
def _keys_dropped(
    connection: sa.Connection, tables: Sequence[str], seconds: dict[str, float]
) -> Iterator[None]:
    """Drop the tables' indexes and keys (and foreign keys touching them), restore after.

    Read from the catalog, so it follows the migrations. Building an index once over
    loaded rows is several times faster than maintaining it row by row.
    """
    names = list(tables)
    constraints = connection.execute(
        sa.text(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), contype "
            "FROM pg_constraint WHERE contype IN ('p', 'u', 'f') AND "
            "(conrelid::regclass::text = ANY(:t) OR confrelid::regclass::text = ANY(:t)) "
            "ORDER BY contype = 'f' DESC"
        ),
        {"t": names},
    ).all()
    indexes = connection.execute(
        sa.text(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "WHERE i.indrelid::regclass::text = ANY(:t) AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"
        ),
        {"t": names},
    ).all()
    for table, name, _definition, _kind in constraints:
        connection.exec_driver_sql(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _definition in indexes:
        connection.exec_driver_sql(f"DROP INDEX {name}")
    yield
    started = time.perf_counter()
    for _name, definition in indexes:
        connection.exec_driver_sql(definition)
    for table, name, definition, kind in reversed(constraints):
        if kind != "f":
            connection.exec_driver_sql(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    seconds["indexes and keys"] = time.perf_counter() - started
    started = time.perf_counter()
    for table, name, definition, kind in constraints:
        if kind == "f":
            connection.exec_driver_sql(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    seconds["foreign keys (validated)"] = time.perf_counter() - started


# The tables whose writes policy_state's triggers follow (migration 0005).
_POLICY_STATE_SOURCES = ("channel_consents", "contact_preferences", "contact_log")


@contextlib.contextmanager
def _policy_state_triggers_off(connection: sa.Connection, postgres: bool) -> Iterator[None]:
    """A bulk load refreshes policy_state once at the end, not once per statement."""
    if not postgres:
        yield
        return
    for table in _POLICY_STATE_SOURCES:
        connection.exec_driver_sql(f"ALTER TABLE {table} DISABLE TRIGGER USER")
    yield
    for table in _POLICY_STATE_SOURCES:
        connection.exec_driver_sql(f"ALTER TABLE {table} ENABLE TRIGGER USER")


def load(engine: sa.Engine, customers: int, at: dt.datetime) -> BenchData:
    """Fill an empty, migrated database; ANALYZE it; return what was loaded and how fast."""
    d = dialect_for(engine)
    topic_id, newsletter_id = uuid.uuid4(), uuid.uuid4()
    params = {"customers": customers}
    typed = [
        sa.bindparam("at", at, type_=UTCDateTime()),
        sa.bindparam("topic", topic_id, type_=sa.Uuid()),
        sa.bindparam("newsletter", newsletter_id, type_=sa.Uuid()),
    ]
    seconds: dict[str, float] = {}

    def timed(label: str, connection: sa.Connection, sql: str) -> None:
        statement = sa.text(sql)
        wanted = [b for b in typed if f":{b.key}" in sql]
        if wanted:
            statement = statement.bindparams(*wanted)
        started = time.perf_counter()
        connection.execute(statement, {k: v for k, v in params.items() if f":{k}" in sql})
        seconds[label] = time.perf_counter() - started

    with engine.begin() as connection:
        if d.name == "postgresql":
            connection.exec_driver_sql("SET LOCAL synchronous_commit = off")
            connection.exec_driver_sql("SET LOCAL maintenance_work_mem = '512MB'")
            connection.exec_driver_sql("SELECT setseed(0.20261123)")
        connection.execute(
            sa.insert(Topic),
            [
                _topic(topic_id, "bench_offers", "marketing", at),
                _topic(newsletter_id, "bench_newsletter", "marketing", at),
                _topic(uuid.uuid4(), "bench_points", "alert", at),
            ],
        )
        connection.execute(
            sa.insert(PressureRule),
            [
                _rule(None, 7, 3, True, at),
                _rule(None, 1, 1, True, at),
                _rule("sms", 30, 4, True, at),
                _rule("email", 1, 1, False, at),
            ],
        )
        keys = (
            _keys_dropped(connection, LOADED, seconds)
            if d.name == "postgresql"
            else contextlib.nullcontext()
        )
        with keys, _policy_state_triggers_off(connection, d.name == "postgresql"):
            timed("(seed draws)", connection, d.seed_table())
            for label, sql in _statements(d):
                timed(label, connection, sql)
            connection.exec_driver_sql("DROP TABLE bench_log_seed")
            connection.exec_driver_sql("DROP TABLE bench_seed")
        if d.name == "postgresql":
            timed("policy_state (rebuilt)", connection, "SELECT policy_state_rebuild()")

    started = time.perf_counter()
    if d.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM (ANALYZE)")
        seconds["VACUUM ANALYZE"] = time.perf_counter() - started
    else:
        with engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
        seconds["ANALYZE"] = time.perf_counter() - started

    with engine.connect() as connection:
        rows = {
            t: int(connection.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one())
            for t in TABLES
        }
    return BenchData(customers, topic_id, at, rows, seconds)


def _topic(topic_id: uuid.UUID, key: str, kind: str, at: dt.datetime) -> dict[str, object]:
    return {
        "id": topic_id,
        "key": key,
        "names": {"fr": key, "en": key},
        "descriptions": {},
        "kind": kind,
        "regime": "opt_in",
        "active": True,
        "created_at": at,
        "updated_at": at,
    }


def _rule(
    channel: str | None, days: int, most: int, active: bool, at: dt.datetime
) -> dict[str, object]:
    return {
        "id": uuid.uuid4(),
        "channel": channel,
        "period_days": days,
        "max_messages": most,
        "active": active,
        "created_at": at,
        "updated_at": at,
    }
