"""Engagement signals and relational fallow: ``.venv/bin/python -m bench fallow [--write-docs]``.

On throw-away PostgreSQL databases:

1. *webhook*: 100,000 SendGrid events in batches of 1,000, each batch as the endpoint
   handles it — ECDSA signature verified, JSON parsed, ``campaigns.events.ingest_retrying``,
   commit — against 50,000 sent deliveries (a realistic mix: processed, delivered,
   human and machine opens, clicks, bounces, drops, a few spam reports and unsubscribes),
   posted by two processes at once (``--posters``; SendGrid posts concurrently, and
   production runs one serve process per core); then the same batches again (SendGrid's
   retries: all duplicates);
2. *dormancy*: 1,000,000 customers and 10,000,000 interactions loaded with one
   ``INSERT … SELECT`` over ``generate_series`` per table, the tables' indexes and
   constraints built after the load; then ``recompute_last_interactions`` twice: from
   nothing (the loader leaves ``last_interaction_at`` empty, so every customer changes),
   and as the repair it is for (the column current but for 1 % of the customers); and the
   day's snapshot. Each figure comes with the server's CPU time for it (read from
   ``/proc`` for the session's backend), which a shared machine disturbs less than the
   wall time.

``--only webhook`` or ``--only dormancy`` runs one part (develop with ``--customers
100000 --interactions 1000000``).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import multiprocessing
import random
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.orm import Session

from campaigns import dormancy, events
from prefcenter.consent_settings import ConsentSettings
from prefcenter.db import make_engine

from . import _docs, _env

AT = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
CFG = ConsentSettings(address_key=b"bench-address-hmac-key-0123456789abcdef")
MIX = (
    ("processed", 0.20),
    ("delivered", 0.38),
    ("open", 0.20),
    ("machine_open", 0.06),
    ("click", 0.10),
    ("bounce", 0.03),
    ("dropped", 0.01),
    ("deferred", 0.015),
    ("spamreport", 0.0025),
    ("unsubscribe", 0.0025),
)


def _load_deliveries(engine: sa.Engine, count: int) -> list[tuple[str, str]]:
    """Customers, a topic, a campaign and one sent delivery each; returns (delivery, email)."""
    with engine.begin() as connection:
        topic, campaign = uuid.uuid4(), uuid.uuid4()
        connection.execute(
            sa.text(
                "INSERT INTO topics (id, key, names, descriptions, kind, regime, active,"
                " created_at, updated_at) VALUES (:id, 'bench_offers', '{}', '{}', 'marketing',"
                " 'opt_out', true, now(), now())"
            ),
            {"id": topic},
        )
        connection.execute(
            sa.text(
                "INSERT INTO campaigns (id, name, topic_id, kind, channels, segment, content,"
                " status, plan_counts, created_at, updated_at) VALUES (:id, 'bench', :topic,"
                " 'marketing', '[\"email\"]', '{}', '{}', 'running', '{}', now(), now())"
            ),
            {"id": campaign, "topic": topic},
        )
        connection.execute(
            sa.text(
                "INSERT INTO customers (id, external_id, email, locale, timezone, attributes,"
                " created_at, updated_at) SELECT gen_random_uuid(), 'F-' || n,"
                " 'member' || n || '@example.com', 'fr', 'Europe/Paris', '{}', now(), now()"
                " FROM generate_series(1, :n) AS n"
            ),
            {"n": count},
        )
        connection.execute(
            sa.text(
                "INSERT INTO deliveries (id, campaign_id, customer_id, channel, status, attempts,"
                " sent_at, created_at, updated_at) SELECT gen_random_uuid(), :campaign, c.id,"
                " 'email', 'sent', 1, now(), now(), now() FROM customers c"
            ),
            {"campaign": campaign},
        )
        rows = connection.execute(
            sa.text(
                "SELECT d.id::text, c.email FROM deliveries d JOIN customers c"
                " ON c.id = d.customer_id"
            )
        ).all()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM (ANALYZE)")
    return [(r[0], r[1]) for r in rows]


def _events(targets: Sequence[tuple[str, str]], total: int, rng: random.Random) -> list[dict]:
    kinds = [k for k, _w in MIX]
    weights = [w for _k, w in MIX]
    now = int(AT.timestamp())
    out = []
    for _ in range(total):
        delivery_id, email = targets[rng.randrange(len(targets))]
        kind = rng.choices(kinds, weights)[0]
        event: dict[str, Any] = {
            "email": email,
            "timestamp": now,
            "sg_event_id": uuid.uuid4().hex,
            "sg_message_id": "bench.filter0001",
            "delivery_id": delivery_id,
            "event": "open" if kind == "machine_open" else kind,
        }
        if kind == "machine_open":
            event["sg_machine_open"] = True
        if kind == "bounce":
            event |= {"type": "bounce", "reason": "550 5.1.1 no such user"}
        if kind == "dropped":
            event["reason"] = "Bounced Address"
        if kind == "click":
            event["url"] = "https://example.com/sale"
        out.append(event)
    return out


def _post(url: str, public: str, bodies: list, go: Any, answers: Any) -> None:
    """One serve process's share of the batches: what ``POST /webhooks/sendgrid`` does."""
    engine = make_engine(url)
    settings = events.WebhookSettings(public, dt.timedelta(days=3650))
    with engine.connect():  # connected before the clock starts
        pass
    retried = 0
    original = events.ingest

    def counting(*args: Any, **kwargs: Any) -> events.Ingested:
        nonlocal retried
        retried += 1
        return original(*args, **kwargs)

    events.ingest = counting  # type: ignore[assignment]  # counts attempts, changes nothing
    answers.put("ready")
    go.wait()
    totals = dict.fromkeys(("new", "duplicates", "engagements", "suppressed", "consent_changes"), 0)
    for body, signature, stamp in bodies:
        now = dt.datetime.now(dt.UTC)
        events.verify(settings, body, signature, stamp, now)
        with Session(engine) as session:
            result = events.ingest_retrying(session, events.parse(body), now, cfg=CFG)
            session.commit()
        for field in totals:
            totals[field] += getattr(result, field)
    answers.put({**totals, "finished": time.monotonic(), "retried": retried - len(bodies)})
    engine.dispose()


def measure_webhook(
    url: str, deliveries: int, total: int, batch: int, posters: int = 2
) -> dict[str, Any]:
    engine = make_engine(url)
    targets = _load_deliveries(engine, deliveries)
    rng = random.Random(20261201)
    all_events = _events(targets, total, rng)
    private = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(
        private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    bodies = []
    for start in range(0, total, batch):
        body = json.dumps(all_events[start : start + batch]).encode()
        stamp = str(int(time.time()))
        signature = base64.b64encode(
            private.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        ).decode()
        bodies.append((body, signature, stamp))

    def run() -> tuple[float, events.Ingested, int]:
        """The batches posted by ``posters`` processes at once, as SendGrid posts them to
        the serve processes (one per core): each verifies, parses, ingests and commits."""
        print(f"  load {_env.load_average()}", file=sys.stderr)
        context = multiprocessing.get_context("spawn")
        go, answers = context.Event(), context.Queue()
        children = [
            context.Process(
                target=_post,
                args=(url, public, bodies[i::posters], go, answers),
                daemon=True,
            )
            for i in range(posters)
        ]
        for child in children:
            child.start()
        ready = [answers.get(timeout=120) for _ in children]
        assert ready == ["ready"] * posters, ready
        started = time.monotonic()
        go.set()
        reports = [answers.get(timeout=600) for _ in children]
        for child in children:
            child.join(timeout=60)
        seconds = max(r["finished"] for r in reports) - started
        totals = events.Ingested()
        for report in reports:
            for field in ("new", "duplicates", "engagements", "suppressed", "consent_changes"):
                setattr(totals, field, getattr(totals, field) + report[field])
        retried = sum(r["retried"] for r in reports)
        print(f"  {seconds:.1f} s, {total / seconds:,.0f} events/s", file=sys.stderr)
        return seconds, totals, retried

    engine.dispose()
    first_seconds, first, first_retried = run()
    again_seconds, again, _again_retried = run()
    return {
        "first": (first_seconds, first),
        "again": (again_seconds, again),
        "posters": posters,
        "retried": first_retried,
        "events": total,
        "batch": batch,
        "deliveries": deliveries,
    }


# The loaded tables' indexes and constraints (but the primary key of customers, which other
# tables reference) are dropped while loading and built again after: one sort per index
# instead of 10,000,000 random index insertions and foreign-key checks.
_DEFINITIONS = """
SELECT conrelid::regclass::text, format('CONSTRAINT %I', conname),
       format('ALTER TABLE %s ADD CONSTRAINT %I %s', conrelid::regclass, conname,
              pg_get_constraintdef(oid)), contype = 'f'
FROM pg_constraint
WHERE conrelid IN ('interactions'::regclass, 'customers'::regclass) AND contype IN ('p', 'u', 'f')
  AND conname <> 'pk_customers'
UNION ALL
SELECT NULL, indexrelid::regclass::text, pg_get_indexdef(indexrelid), false
FROM pg_index
WHERE indrelid IN ('interactions'::regclass, 'customers'::regclass)
  AND indexrelid NOT IN (SELECT conindid FROM pg_constraint WHERE contype IN ('p', 'u'))
"""


def load_dormancy(engine: sa.Engine, customers: int, interactions: int) -> int:
    """1,000,000 customers and 10,000,000 interactions, each table set-based in one INSERT …
    SELECT over generate_series, indexes and constraints built after; returns the count."""
    per_customer = max(1, interactions // customers)
    started = time.perf_counter()

    def step(what: str) -> None:
        print(f"  {what}: {time.perf_counter() - started:.1f} s", file=sys.stderr)

    with engine.begin() as connection:
        connection.exec_driver_sql("SET LOCAL synchronous_commit = off")
        connection.exec_driver_sql("SET LOCAL maintenance_work_mem = '512MB'")
        rebuild = connection.execute(sa.text(_DEFINITIONS)).all()
        for table, name, _definition, _fk in sorted(rebuild, key=lambda r: not r[3]):
            if table:  # a constraint (foreign keys first)
                connection.exec_driver_sql(f"ALTER TABLE {table} DROP {name}")
            else:
                connection.exec_driver_sql(f"DROP INDEX {name}")
        connection.execute(
            sa.text(
                "INSERT INTO customers (id, external_id, locale, timezone, attributes,"
                " created_at, updated_at) SELECT gen_random_uuid(), 'D-' || n, 'fr',"
                " 'Europe/Paris', '{}', :created, :created FROM generate_series(1, :n) AS n"
            ),
            {"n": customers, "created": AT - dt.timedelta(days=800)},
        )
        step("customers")
        # Each customer's interactions drift off at a customer-specific pace: the last one
        # falls anywhere in the past two years, so about a quarter to a third are dormant.
        # Ids: the customer's (random) id with its interaction number in the version digits,
        # unique and random-looking, without 10,000,000 calls to gen_random_uuid().
        connection.execute(
            sa.text(
                "WITH c AS MATERIALIZED (SELECT id, id::text AS t,"
                " abs(hashtext(id::text)) % 250 AS pace FROM customers)"
                " INSERT INTO interactions (id, customer_id, kind, occurred_at, source,"
                " idempotency_key, data, created_at)"
                " SELECT overlay(c.t PLACING lpad(to_hex(k), 4, '0') FROM 15 FOR 4)::uuid, c.id,"
                " 'purchase', :at - make_interval(days => c.pace + k * 7),"
                " 'bench', c.t || '-' || k, '{}', :at"
                " FROM c CROSS JOIN generate_series(1, :k) AS k"
            ),
            {"at": AT, "k": per_customer},
        )
        step("interactions")
        for _table, _name, definition, _fk in sorted(rebuild, key=lambda r: r[3]):
            connection.exec_driver_sql(definition)  # foreign keys last
            step(definition[:60])
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM (ANALYZE)")
        step("vacuum")
        return connection.execute(sa.text("SELECT count(*) FROM interactions")).scalar_one()


# The customers whose last interaction is lost before the repair (one in a hundred).
DRIFT = "abs(hashtext(id::text || 'drift')) % 100 = 0"


def _timed(engine: sa.Engine, work: Any) -> tuple[float, float, Any]:
    """(wall seconds, server CPU seconds, result) of ``work(session)`` and its commit.

    The server's CPU is read from /proc for the session's backend (the database is local);
    on a shared machine it tells the work apart from the wait.
    """
    with Session(engine) as session:
        pid = session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        cpu_before = _backend_cpu(pid)
        load = _env.load_average()
        started = time.perf_counter()
        result = work(session)
        session.commit()
        wall = time.perf_counter() - started
        cpu = _backend_cpu(pid)
    print(f"  {wall:.2f} s (server CPU {cpu - cpu_before:.2f} s), load {load}", file=sys.stderr)
    return wall, cpu - cpu_before, result


def _backend_cpu(pid: int) -> float:
    cpu = _env.cpu_seconds(pid)
    return float("nan") if cpu is None else cpu  # nan: a remote server


def measure_dormancy(url: str, customers: int, interactions: int) -> dict[str, Any]:
    """Rebuild from nothing (the loader leaves the column empty: every customer changes),
    then the repair it is for: the column is current but for 1 % of the customers."""
    engine = make_engine(url)
    started = time.perf_counter()
    loaded = load_dormancy(engine, customers, interactions)
    load_seconds = time.perf_counter() - started

    def rebuild(session: Session) -> int:
        return dormancy.recompute_last_interactions(session, AT)

    print("  rebuild, every customer empty…", file=sys.stderr)
    cold = _timed(engine, rebuild)
    print("  the day's snapshot…", file=sys.stderr)
    counted = _timed(engine, lambda session: dormancy.snapshot(session, AT))
    with engine.begin() as connection:
        drifted = connection.execute(
            sa.text(f"UPDATE customers SET last_interaction_at = NULL WHERE {DRIFT}")
        ).rowcount
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM (ANALYZE) customers")
    print(f"  repair, {drifted:,} customers drifted…", file=sys.stderr)
    repair = _timed(engine, rebuild)
    with Session(engine) as session:
        total, dormant = dormancy.dormant_count(session, AT, 180)
    engine.dispose()
    return {
        "customers": customers,
        "interactions": loaded,
        "load": load_seconds,
        "cold": cold,
        "snapshot": counted,
        "drifted": drifted,
        "repair": repair,
        "dormant": dormant,
        "total": total,
    }


def _webhook_rows(hook: dict[str, Any]) -> list[list[str]]:
    first_seconds, first = hook["first"]
    again_seconds, again = hook["again"]
    return [
        [
            f"webhook: {hook['events']:,} events in batches of {hook['batch']:,} "
            f"({hook['deliveries']:,} deliveries), {hook['posters']} posting at once",
            f"{hook['events'] / first_seconds:,.0f} events/s ({first_seconds:.1f} s; "
            f"{hook['retried']} batches applied again after a conflict)",
            "≥ 10,000/s",
        ],
        [
            "  of which new / engagements / suppressed / consent changes (ledger rows)",
            f"{first.new:,} / {first.engagements:,} / {first.suppressed:,} / "
            f"{first.consent_changes:,}",
            "",
        ],
        [
            "webhook: the same batches again (all duplicates)",
            f"{hook['events'] / again_seconds:,.0f} events/s ({again.duplicates:,} duplicates)",
            "",
        ],
    ]


def _dormancy_rows(fallow: dict[str, Any]) -> list[list[str]]:
    def figure(measured: tuple[float, float, Any], what: str) -> str:
        wall, cpu, _result = measured
        return f"{wall:.2f} s (server CPU {cpu:.2f} s; {what})"

    size = f"{fallow['customers']:,} customers, {fallow['interactions']:,} interactions"
    return [
        [
            f"dormancy: repair last interaction ({fallow['drifted']:,} drifted), {size}",
            figure(fallow["repair"], f"{fallow['repair'][2]:,} customers changed"),
            "≤ 10 s",
        ],
        [
            "dormancy: rebuild from nothing (every customer changes)",
            figure(fallow["cold"], f"{fallow['cold'][2]:,} customers changed"),
            "",
        ],
        [
            "dormancy: the day's snapshot (dormant count)",
            figure(
                fallow["snapshot"],
                f"{fallow['dormant']:,} of {fallow['total']:,} dormant, "
                f"{fallow['dormant'] / fallow['total']:.0%}",
            ),
            "",
        ],
    ]


def run(args: argparse.Namespace) -> str:
    rows: list[list[str]] = []
    machine: dict[str, str] = {}
    fallow: dict[str, Any] = {}
    if args.only in (None, "webhook"):
        with _env.postgres_database(args.database_url, keep=args.keep) as database:
            machine = _env.machine(_env.engine_for(database))
            print("webhook…", file=sys.stderr)
            hook = measure_webhook(
                database.url, args.deliveries, args.events, args.batch, args.posters
            )
        rows += _webhook_rows(hook)
    if args.only in (None, "dormancy"):
        with _env.postgres_database(args.database_url, keep=args.keep) as database:
            machine = machine or _env.machine(_env.engine_for(database))
            print("dormancy…", file=sys.stderr)
            fallow = measure_dormancy(database.url, args.customers, args.interactions)
        rows += _dormancy_rows(fallow)
    lines = [
        f"Command: `{args.command}`",
        "",
        "Machine: "
        + "; ".join(f"{k} {v}" for k, v in machine.items())
        + f"; load {_env.load_average()}.",
        "",
        _env.table(["measure", "figure", "target"], rows),
    ]
    if fallow:
        lines += [
            "",
            f"(Loading the dormancy data took {fallow['load']:.0f} s; not part of the figures.)",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench fallow", description=__doc__)
    parser.add_argument("--database-url", default=_env.DEFAULT_POSTGRES_URL)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument(
        "--posters",
        type=int,
        default=2,
        help="processes posting batches at once (production: one serve process per core)",
    )
    parser.add_argument("--deliveries", type=int, default=50_000)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--interactions", type=int, default=10_000_000)
    parser.add_argument("--only", choices=("webhook", "dormancy"), help="one part only")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    args.command = " ".join([".venv/bin/python -m bench fallow", *argv])
    text = run(args)
    print(text)
    if args.write_docs:
        _docs.write_section("fallow", "Engagement signals and relational fallow", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
