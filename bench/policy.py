"""Contact policy benchmark: set-based decisions for 1M customers, per-customer latency.

Targets (issue "contact policy"): the set-based form decides for 1,000,000 customers
on PostgreSQL in at most 5 s on a 2-core machine; the per-customer form takes at
most 1 ms (median).

What is measured:

* set-based, PostgreSQL — the whole ``with policy.audience(...)`` block (the contact
  windows computed, the query runs) for every customer, consumed three ways without
  building Python rows: ``GROUP BY decision, reason`` (the forecast), ``INSERT INTO
  <unlogged table> SELECT`` (which PostgreSQL 15 runs in one process), and ``CREATE
  UNLOGGED TABLE … AS`` (parallel; how campaign planning stages the decisions before
  writing deliveries and exclusion counts from them); the first two must give the
  same count for every (decision, reason);
* per customer, PostgreSQL — :func:`policy.choose` and :func:`policy.decide` for a
  random sample of customers loaded beforehand; only the policy call is timed, and
  every ``choose`` must give the decision of the set-based row;
* set-based, SQLite — the same two ways, on a smaller file database, for reference.

Data is generated set-based by :mod:`bench._policy_data` (see its docstring for
the shape) in a throw-away database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from prefcenter import policy
from prefcenter.consent_settings import ConsentSettings
from prefcenter.db import staged
from prefcenter.models import Customer, Topic
from prefcenter.models.base import UTCDateTime

from . import _env
from ._policy_data import BenchData, load, shape

# A Monday, 09:00 UTC: 10:00 in Paris, 04:00 in New York, 18:00 in Tokyo.
AT = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
CHANNELS = ("email", "sms", "post")
CFG = ConsentSettings(address_key=b"bench-address-key-0123456789abcdef")
SET_BASED_TARGET_S = 5.0
# The form campaign planning uses: parallel on PostgreSQL, unlike INSERT ... SELECT.
STAGED = "CREATE UNLOGGED TABLE ... AS (as planning stages)"
PER_CUSTOMER_TARGET_MS = 1.0
# A cold run this many times over the target is not repeated: its median would tell
# nothing more and would take many minutes.
HOPELESS = 10


@dataclasses.dataclass(frozen=True)
class Options:
    customers: int = 1_000_000
    sqlite_customers: int = 100_000
    database_url: str = _env.DEFAULT_POSTGRES_URL
    repeat: int = 3
    sample: int = 1000
    keep: bool = False
    sqlite: bool = True
    postgres: bool = True
    explain: bool = False
    seed: int = 20261123


@dataclasses.dataclass
class SetBasedRun:
    total: float  # the whole audience block
    windows: float  # entering it: the windows table created and filled
    query: float  # the statement (and its commit for the INSERT)


@dataclasses.dataclass
class SetBased:
    backend: str
    customers: int
    how: str  # "GROUP BY decision, reason" | "INSERT ... SELECT" | STAGED
    cold: SetBasedRun
    runs: list[SetBasedRun]  # empty when the cold run was hopeless

    @property
    def measured(self) -> list[SetBasedRun]:
        return self.runs or [self.cold]

    @property
    def median(self) -> SetBasedRun:
        ordered = sorted(self.measured, key=lambda r: r.total)
        return ordered[(len(ordered) - 1) // 2]


@dataclasses.dataclass
class PerCustomer:
    function: str
    calls: int
    timings: _env.Timings
    statements: float  # SQL statements per call, on average


@dataclasses.dataclass
class Report:
    machine: dict[str, str]
    options: Options
    command: str
    loads: list[tuple[str, BenchData, float]] = dataclasses.field(default_factory=list)
    set_based: list[SetBased] = dataclasses.field(default_factory=list)
    distribution: list[tuple[str, str, str, int]] = dataclasses.field(default_factory=list)
    # The 1-minute load average as each measurement began (others share the machine).
    load: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    per_customer: list[PerCustomer] = dataclasses.field(default_factory=list)
    agreement: tuple[int, int] | None = None  # (agreeing, sampled)
    disagreements: list[str] = dataclasses.field(default_factory=list)
    explain: str | None = None
    # Do the two ways of consuming the audience give the same count per (decision, reason)?
    same_counts: bool | None = None


def bench_message(data: BenchData) -> policy.Message:
    return policy.Message(data.topic_id, "opt_in", "marketing", CHANNELS)


# --------------------------------------------------------------------------- set-based


_DECISIONS: dict[str, sa.Table] = {}


def _decisions_table(backend: str) -> sa.Table:
    """Where the INSERT form writes the decisions (an unlogged table on PostgreSQL)."""
    if backend not in _DECISIONS:
        _DECISIONS[backend] = _new_decisions_table(backend)
    return _DECISIONS[backend]


def _new_decisions_table(backend: str) -> sa.Table:
    return sa.Table(
        "bench_decisions",
        sa.MetaData(),
        sa.Column("customer_id", sa.Uuid, nullable=False),
        sa.Column("channel", sa.String(8)),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("reason", sa.String(32)),
        sa.Column("until", UTCDateTime()),
        sa.Column("contact_at", UTCDateTime()),
        prefixes=["UNLOGGED"] if backend == "postgresql" else [],
    )


@contextlib.contextmanager
def timed_audience(
    session: Session, message: policy.Message, run: dict[str, float]
) -> Iterator[policy.Audience]:
    """``policy.audience`` over every customer; records how long entering it took."""
    started = time.perf_counter()
    with policy.audience(session, message, sa.select(Customer.id), AT, cfg=CFG) as audience:
        run["windows"] = time.perf_counter() - started
        yield audience


def count_decisions(engine: sa.Engine, message: policy.Message) -> tuple[SetBasedRun, list[Any]]:
    run: dict[str, float] = {}
    started = time.perf_counter()
    with Session(engine) as session:
        with timed_audience(session, message, run) as audience:
            query_started = time.perf_counter()
            decisions = audience.query.subquery("decisions")
            rows = session.execute(
                sa.select(decisions.c.decision, decisions.c.reason, sa.func.count()).group_by(
                    decisions.c.decision, decisions.c.reason
                )
            ).all()
            run["query"] = time.perf_counter() - query_started
        session.commit()
    return SetBasedRun(time.perf_counter() - started, run["windows"], run["query"]), rows


def insert_decisions(engine: sa.Engine, message: policy.Message) -> SetBasedRun:
    target = _decisions_table(engine.dialect.name)
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(sa.text(f"TRUNCATE {target.name}"))
        else:
            connection.execute(target.delete())
    run: dict[str, float] = {}
    started = time.perf_counter()
    with Session(engine) as session:
        with timed_audience(session, message, run) as audience:
            query_started = time.perf_counter()
            decisions = audience.query.subquery("decisions")
            session.execute(
                target.insert().from_select(
                    [c.name for c in target.columns],
                    sa.select(*(decisions.c[c.name] for c in target.columns)),
                )
            )
            run["query"] = time.perf_counter() - query_started
        session.commit()
    return SetBasedRun(time.perf_counter() - started, run["windows"], run["query"])


def stage_decisions(engine: sa.Engine, message: policy.Message) -> SetBasedRun:
    """The decisions staged as a table (``CREATE UNLOGGED TABLE … AS``), as the planner does."""
    run: dict[str, float] = {}
    started = time.perf_counter()
    with Session(engine) as session:
        with timed_audience(session, message, run) as audience:
            query_started = time.perf_counter()
            with staged(session, audience.query) as decisions:
                session.execute(sa.select(sa.func.count()).select_from(decisions)).scalar_one()
                run["query"] = time.perf_counter() - query_started
        session.commit()
    return SetBasedRun(time.perf_counter() - started, run["windows"], run["query"])


def measure_set_based(
    engine: sa.Engine, data: BenchData, repeat: int
) -> tuple[list[SetBased], list[Any]]:
    message = bench_message(data)
    target = _decisions_table(engine.dialect.name)
    target.create(engine, checkfirst=True)
    backend = engine.dialect.name

    cold, rows = count_decisions(engine, message)
    runs = [count_decisions(engine, message)[0] for _ in range(_repeats(cold, repeat))]
    counted = SetBased(backend, data.customers, "GROUP BY decision, reason", cold, runs)

    cold = insert_decisions(engine, message)
    runs = [insert_decisions(engine, message) for _ in range(_repeats(cold, repeat))]
    inserted = SetBased(backend, data.customers, "INSERT ... SELECT", cold, runs)

    cold = stage_decisions(engine, message)
    runs = [stage_decisions(engine, message) for _ in range(_repeats(cold, repeat))]
    staged_ = SetBased(backend, data.customers, STAGED, cold, runs)
    return [counted, inserted, staged_], rows


def _repeats(cold: SetBasedRun, repeat: int) -> int:
    return 0 if cold.total > HOPELESS * SET_BASED_TARGET_S else repeat


def _sorted_rows(rows: Sequence[Any]) -> list[tuple[Any, ...]]:
    return sorted((tuple(r) for r in rows), key=repr)


def counts_agree(engine: sa.Engine, rows: Sequence[Any]) -> bool:
    """The GROUP BY counts against the rows the last INSERT run wrote."""
    target = _decisions_table(engine.dialect.name)
    with engine.connect() as connection:
        inserted = connection.execute(
            sa.select(target.c.decision, target.c.reason, sa.func.count()).group_by(
                target.c.decision, target.c.reason
            )
        ).all()
    return _sorted_rows(inserted) == _sorted_rows(rows)


def distribution(engine: sa.Engine) -> list[tuple[str, str, str, int]]:
    """Decisions by (decision, reason, channel), from the last INSERT run."""
    target = _decisions_table(engine.dialect.name)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(target.c.decision, target.c.reason, target.c.channel, sa.func.count())
            .group_by(target.c.decision, target.c.reason, target.c.channel)
            .order_by(sa.func.count().desc())
        ).all()
    return [(d, r or "", c or "", int(n)) for d, r, c, n in rows]


def explain(engine: sa.Engine, data: BenchData) -> str:
    """The generated SQL and its EXPLAIN (ANALYZE, BUFFERS) plan, for the GROUP BY form."""
    message = bench_message(data)
    with Session(engine) as session:
        with policy.audience(session, message, sa.select(Customer.id), AT, cfg=CFG) as audience:
            decisions = audience.query.subquery("decisions")
            query = sa.select(decisions.c.decision, decisions.c.reason, sa.func.count()).group_by(
                decisions.c.decision, decisions.c.reason
            )
            connection = session.connection()
            seen: list[str] = []

            # The statement is explained as sent, with its parameters (arrays of the
            # windows and orders, which cannot be rendered as literals).
            def prefix(_conn, _cursor, statement, parameters, _context, _many):  # type: ignore[no-untyped-def]
                seen.append(statement)
                return f"EXPLAIN (ANALYZE, BUFFERS, VERBOSE) {statement}", parameters

            event.listen(connection, "before_cursor_execute", prefix, retval=True)
            try:
                plan = connection.execute(query).cursor.fetchall()
            finally:
                event.remove(connection, "before_cursor_execute", prefix)
        session.rollback()
    return seen[0] + ";\n\n" + "\n".join(line for (line,) in plan)


# --------------------------------------------------------------------------- per customer


@contextlib.contextmanager
def count_statements(engine: sa.Engine) -> Iterator[list[int]]:
    counter = [0]

    def before(*_args: Any) -> None:
        counter[0] += 1

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield counter
    finally:
        event.remove(engine, "before_cursor_execute", before)


def _sample_numbers(customers: int, size: int, seed: int) -> tuple[list[int], list[int]]:
    chosen = random.Random(seed).sample(range(1, customers + 1), min(customers, size + 20))
    return chosen[20:], chosen[:20]  # the sample, and a few for warming up


def _load_customers(session: Session, numbers: Sequence[int]) -> list[Customer]:
    refs = [f"bench-{n}" for n in numbers]
    by_ref = {
        c.external_id: c
        for c in session.scalars(sa.select(Customer).where(Customer.external_id.in_(refs)))
    }
    return [by_ref[r] for r in refs]


def _time_calls(
    engine: sa.Engine,
    numbers: Sequence[int],
    warm_up: Sequence[int],
    call: Callable[[Session, Customer], policy.Decision],
) -> tuple[_env.Timings, float, dict[uuid.UUID, policy.Decision]]:
    samples: list[float] = []
    decisions: dict[uuid.UUID, policy.Decision] = {}
    with Session(engine) as session:
        for customer in _load_customers(session, warm_up):
            call(session, customer)
        customers = _load_customers(session, numbers)
        with count_statements(engine) as statements:
            for customer in customers:
                started = time.perf_counter()
                decision = call(session, customer)
                samples.append(time.perf_counter() - started)
                decisions[customer.id] = decision
        session.rollback()
    return _env.Timings(tuple(samples)), statements[0] / len(numbers), decisions


def measure_per_customer(
    engine: sa.Engine, data: BenchData, sample: int, seed: int
) -> tuple[list[PerCustomer], dict[uuid.UUID, policy.Decision]]:
    message = bench_message(data)
    numbers, warm_up = _sample_numbers(data.customers, sample, seed)
    with Session(engine) as session:
        topic = session.get_one(Topic, data.topic_id)
        session.expunge(topic)

    def choose(session: Session, customer: Customer) -> policy.Decision:
        return policy.choose(session, customer, message, AT, cfg=CFG)

    def decide(session: Session, customer: Customer) -> policy.Decision:
        return policy.decide(session, customer, CHANNELS[0], topic, "marketing", AT, cfg=CFG)

    results = []
    chosen: dict[uuid.UUID, policy.Decision] = {}
    for name, call in (
        (f"choose (channels {', '.join(CHANNELS)})", choose),
        (f"decide ({CHANNELS[0]})", decide),
    ):
        timings, statements, decisions = _time_calls(engine, numbers, warm_up, call)
        results.append(PerCustomer(name, len(numbers), timings, statements))
        if call is choose:
            chosen = decisions
    return results, chosen


def compare_forms(
    engine: sa.Engine, chosen: dict[uuid.UUID, policy.Decision]
) -> tuple[tuple[int, int], list[str]]:
    """Do the sampled per-customer decisions match the set-based ones (last INSERT run)?"""
    target = _decisions_table(engine.dialect.name)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(target).where(target.c.customer_id.in_(list(chosen)))
        ).all()
    agree, differ = 0, []
    for row in rows:
        many = policy.Decision(row.decision, row.channel, row.reason, row.until)
        if chosen[row.customer_id] == many:
            agree += 1
        else:
            differ.append(f"{row.customer_id}: choose {chosen[row.customer_id]} != set {many}")
    return (agree, len(chosen)), differ


# --------------------------------------------------------------------------- running


def run(options: Options, command: str, log: Callable[[str], None] = print) -> Report:
    report = Report(_env.machine(), options, command)
    if options.postgres:
        with _env.postgres_database(options.database_url, keep=options.keep) as database:
            engine = _env.engine_for(database)
            try:
                report.machine = _env.machine(engine)
                log(f"PostgreSQL: loading {options.customers:,} customers into {database.name}")
                data = load(engine, options.customers, AT)
                report.loads.append(("PostgreSQL", data, database.migrate_seconds))
                log(f"  loaded in {data.load_seconds:.1f} s; set-based runs")
                report.load.append(("PostgreSQL set-based", os.getloadavg()[0]))
                measured, rows = measure_set_based(engine, data, options.repeat)
                report.set_based.extend(measured)
                report.same_counts = counts_agree(engine, rows)
                report.distribution = distribution(engine)
                if options.explain:
                    log("  EXPLAIN ANALYZE")
                    report.explain = explain(engine, data)
                log(f"  per customer: {options.sample} customers")
                report.load.append(("per customer", os.getloadavg()[0]))
                report.per_customer, chosen = measure_per_customer(
                    engine, data, options.sample, options.seed
                )
                report.agreement, report.disagreements = compare_forms(engine, chosen)
            finally:
                engine.dispose()
    if options.sqlite:
        with _env.sqlite_database(keep=options.keep) as database:
            engine = _env.engine_for(database)
            try:
                log(f"SQLite: loading {options.sqlite_customers:,} customers into {database.name}")
                data = load(engine, options.sqlite_customers, AT)
                report.loads.append(("SQLite", data, database.migrate_seconds))
                log(f"  loaded in {data.load_seconds:.1f} s; set-based runs")
                report.load.append(("SQLite set-based", os.getloadavg()[0]))
                measured, _rows = measure_set_based(engine, data, options.repeat)
                report.set_based.extend(measured)
            finally:
                engine.dispose()
    return report


# --------------------------------------------------------------------------- reporting


def _s(seconds: float) -> str:
    return f"{seconds:.2f} s"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def render(report: Report) -> str:
    """The figures as Markdown (printed, and written to docs/PERFORMANCE.md)."""
    o = report.options
    out: list[str] = []
    out.append(f"Command: `{report.command}`\n")
    out.append("Machine (read by the benchmark):\n")
    out.extend(f"- {key}: {value}" for key, value in report.machine.items())
    if report.load:
        loads = ", ".join(f"{label} {load:.1f}" for label, load in report.load)
        out.append(
            f"- load average (1 min) as each measurement began: {loads} "
            f"(above {os.cpu_count()}, other work was sharing the cores)"
        )
    out.append("")

    if report.loads:
        out.append("### Data\n")
        out.append("Shape (`bench/_policy_data.py`; fractions are of all customers):\n")
        out.extend(f"- {line}" for line in shape())
        out.append("")
        tables = sorted({t for _, data, _ in report.loads for t in data.rows})
        out.append(
            _env.table(
                ["table", *(name for name, _, _ in report.loads)],
                [[t, *(f"{data.rows[t]:,}" for _, data, _ in report.loads)] for t in tables],
            )
        )
        out.append("")
        steps = list(dict.fromkeys(s for _, data, _ in report.loads for s in data.seconds))
        rows = [["migrate (alembic upgrade)", *(_s(m) for _, _, m in report.loads)]]
        rows += [
            [s, *(_s(data.seconds[s]) if s in data.seconds else "-" for _, data, _ in report.loads)]
            for s in steps
        ]
        rows.append(["**load total**", *(_s(data.load_seconds) for _, data, _ in report.loads)])
        out.append("Load time (set-based `INSERT ... SELECT`, not part of the figures below):\n")
        out.append(_env.table(["step", *(name for name, _, _ in report.loads)], rows))
        out.append("")

    if report.set_based:
        out.append("### Set-based decisions\n")
        out.append(
            f"`policy.audience(session, message, select(Customer.id), at)` for every customer; "
            f"message on channels {', '.join(CHANNELS)}, marketing, opt-in topic; "
            f"at = {AT:%Y-%m-%d %H:%M} UTC. Median of {o.repeat} runs after one cold run "
            f"(a cold run over {HOPELESS * SET_BASED_TARGET_S:.0f} s is not repeated: then "
            "*runs* is 1 and the figure is that run); *windows* is entering `audience()` "
            "(the active rules read, the time zones and contact hours in use read and their "
            "windows computed in Python), *query* is the statement (with its commit for the "
            "INSERT). The forecast consumes the decisions as the `GROUP BY` does and planning "
            "as the `CREATE TABLE … AS` does; no product path uses `INSERT … SELECT` "
            "(PostgreSQL 15 runs a writing statement in one process), shown for comparison.\n"
        )
        rows = []
        for r in report.set_based:
            m = r.median
            target = ""
            if r.backend == "postgresql" and r.customers >= 1_000_000:
                target = f"≤ {SET_BASED_TARGET_S:.0f} s: {_verdict(m.total <= SET_BASED_TARGET_S)}"
                if r.how == "INSERT ... SELECT":
                    # No product path writes decisions this way (planning stages them with
                    # CREATE TABLE … AS); shown for the cost of a one-process write.
                    target = "(no product path)"
            rows.append(
                [
                    "PostgreSQL" if r.backend == "postgresql" else "SQLite",
                    f"{r.customers:,}",
                    r.how,
                    _s(m.total),
                    str(len(r.measured)),
                    _s(m.windows),
                    _s(m.query),
                    _s(min(x.total for x in r.measured)),
                    _s(max(x.total for x in r.measured)),
                    _s(r.cold.total),
                    target,
                ]
            )
        out.append(
            _env.table(
                [
                    "backend",
                    "customers",
                    "consumed by",
                    "median",
                    "runs",
                    "windows",
                    "query",
                    "min",
                    "max",
                    "cold",
                    "target",
                ],
                rows,
            )
        )
        out.append("")
    if report.distribution:
        total = sum(n for *_, n in report.distribution)
        out.append(f"Decisions for the {total:,} PostgreSQL customers (the data is realistic):\n")
        if report.same_counts is not None:
            same = "the same" if report.same_counts else "**not** the same"
            out.append(
                f"`GROUP BY` and `INSERT ... SELECT` gave {same} count of customers for every "
                "(decision, reason).\n"
            )
        out.append(
            _env.table(
                ["decision", "reason", "channel", "customers", "share"],
                [[d, r, c, f"{n:,}", f"{n / total:.1%}"] for d, r, c, n in report.distribution],
            )
        )
        out.append("")

    if report.per_customer:
        out.append("### Per customer (PostgreSQL)\n")
        out.append(
            f"{o.sample:,} random customers loaded first; only the policy call is timed "
            "(each call runs its own SQL queries).\n"
        )
        rows = []
        for p in report.per_customer:
            median = p.timings.median
            rows.append(
                [
                    f"`{p.function}`",
                    f"{p.calls:,}",
                    _ms(median),
                    _ms(p.timings.percentile(95)),
                    _ms(p.timings.percentile(99)),
                    f"{p.statements:.1f}",
                    f"≤ {PER_CUSTOMER_TARGET_MS:.0f} ms median: "
                    f"{_verdict(median * 1000 <= PER_CUSTOMER_TARGET_MS)}",
                ]
            )
        out.append(
            _env.table(
                ["call", "calls", "median", "p95", "p99", "SQL statements / call", "target"],
                rows,
            )
        )
        out.append("")
        if report.agreement:
            agree, sampled = report.agreement
            out.append(
                f"Both forms agree on {agree:,} of the {sampled:,} sampled customers "
                "(`choose` vs the set-based row)."
            )
            out.extend(f"- {line}" for line in report.disagreements[:10])
            out.append("")

    return "\n".join(out)
