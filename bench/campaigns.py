"""Campaign engine benchmark: ``.venv/bin/python -m bench campaigns [--write-docs]``.

On a throw-away PostgreSQL database filled with the policy benchmark's realistic data
(bench/_policy_data.py):

1. *plan*: ``campaigns.planner.plan`` of one campaign over every customer, run in a
   child process of its own so that its peak RSS is the planner's alone;
2. *dispatch*: the planned email deliveries sent by the real actor
   (``campaigns.tasks.dispatch_deliveries``) run by a Dramatiq worker in this one process
   (``--threads``, ids per message ``--batch``) as ``prefcenter worker`` runs it, fed by
   an in-memory broker, through the real ``sendgrid`` client to the fake SendGrid server
   running in another process (which checks it received each delivery exactly once);
3. *naive vs set-based*: the same campaign over a smaller base planned by a
   per-customer ORM loop (``policy.choose`` + ORM inserts) and by the planner, each in
   a transaction rolled back afterwards, as a ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import resource
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import dramatiq
import sqlalchemy as sa
from dramatiq.brokers.stub import StubBroker
from sqlalchemy.orm import Session

from campaigns import dispatch, planner
from campaigns import tasks as campaign_tasks
from campaigns.models import Campaign, CampaignExclusion, Delivery
from prefcenter import policy, tasks
from prefcenter.broker import use_broker
from prefcenter.consent_settings import ConsentSettings
from prefcenter.db import make_engine, make_session_factory, task_session
from prefcenter.models import ContactLogEntry, Customer, utcnow

from . import _docs, _env
from . import _policy_data as data

SECRET = "bench-secret-0123456789-0123456789-0123456789"
KEY = b"bench-address-hmac-key-0123456789abcdef"
CFG = ConsentSettings(address_key=KEY)
CONTENT = {
    "email": {
        "fr": {
            "subject": "Les soldes, {{ first_name }}",
            "html": "<p>Bonjour {{ first_name }},</p><p>Nos soldes commencent.</p>"
            '<p><a href="{{ unsubscribe_url }}">Se désabonner</a></p>',
            "text": "Bonjour {{ first_name }}, nos soldes commencent. {{ unsubscribe_url }}",
        }
    },
    "sms": {"fr": {"text": "Soldes ! {{ portal_url }}"}},
    "post": {"fr": {"text": "Madame, Monsieur, nos soldes commencent."}},
}


def _campaign(session: Session, topic_id: uuid.UUID, name: str) -> Campaign:
    campaign = Campaign(
        name=name,
        topic_id=topic_id,
        kind="marketing",
        channels=["email", "sms", "post"],
        segment={"all": []},
        content=CONTENT,
        status="running",
    )
    session.add(campaign)
    session.flush()
    return campaign


# -- 1. plan, in a child process ---------------------------------------------------------------


# What each of the planner's statements is, by how its SQL begins (the longer ones only).
_PLAN_STEPS = (
    ("CREATE UNLOGGED TABLE", "policy decisions staged (CREATE TABLE … AS)"),
    ("INSERT INTO deliveries", "INSERT deliveries (contacted customers)"),
    ("INSERT INTO contact_log", "INSERT reservations (contact_log)"),
    ("INSERT INTO policy_state", "reservations merged into policy_state"),
    ("COMMIT", "commit"),
)


def _backend_cpu(pid: int | None) -> float | None:
    """User + system CPU seconds of a PostgreSQL backend on this machine (None elsewhere)."""
    return None if pid is None else _env.cpu_seconds(pid)


def _plan_child(url: str, campaign_id: str, at_iso: str) -> None:
    """Runs in the child: plan, commit, print seconds, peak RSS, counts and steps as JSON."""
    engine = make_engine(url)
    at = dt.datetime.fromisoformat(at_iso)
    steps: dict[str, list[float]] = {}
    started_step: dict[str, Any] = {}

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _before(conn, cursor, statement, parameters, context, executemany):
        started_step.update(wall=time.perf_counter(), cpu=_backend_cpu(started_step.get("pid")))

    @sa.event.listens_for(engine, "after_cursor_execute")
    def _after(conn, cursor, statement, parameters, context, executemany):
        wall = time.perf_counter() - started_step["wall"]
        cpu_after = _backend_cpu(started_step.get("pid"))
        cpu = cpu_after - started_step["cpu"] if cpu_after is not None else float("nan")
        label = next(
            (name for start, name in _PLAN_STEPS if statement.lstrip().startswith(start)),
            "other statements",
        )
        total = steps.setdefault(label, [0.0, 0.0])
        total[0] += wall
        total[1] += cpu

    with Session(engine) as session:
        started_step["pid"] = session.scalar(sa.select(sa.func.pg_backend_pid()))
        campaign = session.get(Campaign, uuid.UUID(campaign_id))
        steps.clear()
        started = time.perf_counter()
        counts = planner.plan(session, campaign, sa.select(Customer.id), at, cfg=CFG)
        before_commit = time.perf_counter()
        session.commit()
        seconds = time.perf_counter() - started
    steps["commit"] = [seconds - (before_commit - started), float("nan")]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"seconds": seconds, "rss_mb": rss_mb, "counts": counts.as_dict(), "steps": steps}
        )
    )


def measure_plan(url: str, campaign_id: uuid.UUID, at: dt.datetime) -> dict[str, Any]:
    child = subprocess.run(
        [sys.executable, "-m", "bench.campaigns", "_plan", url, str(campaign_id), at.isoformat()],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(child.stdout.strip().splitlines()[-1])


# -- 2. dispatch through the fake SendGrid ------------------------------------------------------


def _serve_fake(port_queue: Any, stop: Any) -> None:
    """Runs in a process of its own (its CPU is not the worker's): the fake SendGrid."""
    from tests.fakes.sendgrid import FakeSendGrid

    fake = FakeSendGrid(keep_bodies=False, count_deliveries=True)
    port_queue.put(fake.server.server_address[1])
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    stop.wait()
    fake.server.shutdown()
    port_queue.put((fake.received_personalizations, dict(fake.received_deliveries)))


def patch_clock(now: Callable[[], dt.datetime]) -> Callable[[], None]:
    """Make dispatch read the time from ``now``; returns what puts the real clock back."""
    saved = campaign_tasks.utcnow, dispatch.utcnow
    campaign_tasks.utcnow = dispatch.utcnow = now

    def restore() -> None:
        campaign_tasks.utcnow, dispatch.utcnow = saved

    return restore


def _database_backends_cpu(engine: sa.Engine, database: str) -> dict[int, float]:
    """CPU seconds used so far by each PostgreSQL backend connected to ``database``."""
    with engine.connect() as connection:
        pids = connection.scalars(
            sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": database}
        ).all()
    used = {pid: _env.cpu_seconds(pid) for pid in pids}
    return {pid: cpu for pid, cpu in used.items() if cpu is not None}


def measure_dispatch(
    engine: sa.Engine, url: str, database: str, at: dt.datetime, args: argparse.Namespace
) -> dict[str, Any]:
    """The real actor (``campaigns.tasks.dispatch_deliveries``) run by a Dramatiq worker
    with ``args.threads`` threads in this process, as ``prefcenter worker`` runs it, fed
    by an in-memory broker; the fake SendGrid runs in another process."""
    context = multiprocessing.get_context("spawn")
    ports, stop = context.Queue(), context.Event()
    server = context.Process(target=_serve_fake, args=(ports, stop), daemon=True)
    server.start()
    port = ports.get(timeout=30)
    tasks.configure(
        {
            "sqlalchemy.url": url,
            "prefcenter.secret": SECRET,
            "prefcenter.address_hmac_key": KEY.decode(),
            "prefcenter.public_url": "https://prefs.example.com",
            "prefcenter.email.from": "Bench <bench@example.com>",
            "prefcenter.email.transport": "sendgrid",
            "sendgrid.api_key": "SG.bench",
            "sendgrid.host": f"http://127.0.0.1:{port}",
        }
    )
    broker = StubBroker()
    broker.emit_after("process_boot")
    use_broker(broker)
    factory = make_session_factory(engine)

    # Only email goes to SendGrid: queue the planned email deliveries due now.
    with task_session(factory) as session:
        due = list(
            session.scalars(
                sa.select(Delivery.id)
                .where(Delivery.status == "planned", Delivery.channel == "email")
                .limit(args.dispatch)
            )
        )
        for chunk in range(0, len(due), 5000):
            session.execute(
                sa.update(Delivery)
                .where(Delivery.id.in_(due[chunk : chunk + 5000]))
                .values(status="queued", queued_at=at)
            )
    # The data are as of ``at``: the actor's clock runs from there, as if it were then.
    shift = at - utcnow()
    clock = patch_clock(lambda: utcnow() + shift)
    worker = dramatiq.Worker(broker, worker_threads=args.threads)
    worker.start()
    load = _env.load_average()
    backends = _database_backends_cpu(engine, database)
    cpu, started = time.process_time(), time.perf_counter()
    campaign_tasks.enqueue(due, batch=args.batch)
    broker.join("campaigns", fail_fast=True)
    worker.join()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    after = _database_backends_cpu(engine, database)
    postgres_cpu = sum(used - backends.get(pid, 0.0) for pid, used in after.items())
    worker.stop()
    clock()
    tasks.dispose()
    stop.set()
    received, per_delivery = ports.get(timeout=60)
    server.join(timeout=30)
    with Session(engine) as session:
        queued_above = Delivery.queued_at.is_not(None)
        statuses = dict(
            session.execute(
                sa.select(Delivery.status, sa.func.count())
                .where(queued_above)
                .group_by(Delivery.status)
            ).all()
        )
        expected = {
            str(i)
            for i in session.scalars(
                sa.select(Delivery.id).where(queued_above, Delivery.status == "sent")
            )
        }
    return {
        "deliveries": len(due),
        "batch": args.batch,
        "threads": args.threads,
        "load": load,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "postgres_cpu_seconds": postgres_cpu,
        "statuses": statuses,
        "received": received,
        "expected": len(expected),
        "received_once": sum(1 for i, n in per_delivery.items() if n == 1 and i in expected),
        "received_twice": sum(1 for n in per_delivery.values() if n > 1),
        "received_unknown": sum(1 for i in per_delivery if i not in expected),
    }


# -- 3. the naive loop vs the planner -----------------------------------------------------------


def naive_plan(session: Session, campaign: Campaign, at: dt.datetime) -> int:
    """What a per-customer ORM loop does: load each customer, ask the policy, insert."""
    message = planner.message_for(session, campaign)
    contacted = 0
    skipped: dict[tuple[str | None, str | None], int] = {}
    for customer in session.scalars(sa.select(Customer)):
        decision = policy.choose(session, customer, message, at, cfg=CFG)
        if not decision.contacts:  # counted, as the planner does
            key = (decision.channel, decision.reason)
            skipped[key] = skipped.get(key, 0) + 1
            continue
        session.add(
            Delivery(
                campaign_id=campaign.id,
                customer_id=customer.id,
                channel=decision.channel,
                status="deferred" if decision.until else "planned",
                reason=decision.reason,
                scheduled_at=decision.until or at,
            )
        )
        contacted += 1
        session.add(
            ContactLogEntry(
                customer_id=customer.id,
                channel=decision.channel,
                topic_id=message.topic_id,
                kind=message.kind,
                at=decision.until or at,
                status="reserved",
                message_ref=message.message_ref,
            )
        )
        session.flush()
    for (channel, reason), n in skipped.items():
        session.add(
            CampaignExclusion(campaign_id=campaign.id, channel=channel, reason=reason, customers=n)
        )
    session.flush()
    return contacted


def measure_naive_vs_planner(engine: sa.Engine, topic_id: uuid.UUID, at: dt.datetime) -> dict:
    figures = {}
    for label in ("naive", "planner"):
        with Session(engine) as session:
            campaign = _campaign(session, topic_id, label)
            started = time.perf_counter()
            if label == "naive":
                contacted = naive_plan(session, campaign, at)
            else:
                contacted = planner.plan(
                    session, campaign, sa.select(Customer.id), at, cfg=CFG
                ).contacted
            figures[label] = {"seconds": time.perf_counter() - started, "contacted": contacted}
            session.rollback()  # each starts from the same state
    return figures


# -- report --------------------------------------------------------------------------------------


def dispatch_rows(sent: dict[str, Any]) -> list[list[str]]:
    n, statuses = sent["deliveries"], sent["statuses"]
    rate = statuses.get("sent", 0) / sent["seconds"] if sent["seconds"] else 0
    once = sent["received_once"] == sent["expected"] and not (
        sent["received_twice"] or sent["received_unknown"]
    )
    return [
        [
            f"dispatch {n:,} emails, one worker process ({sent['threads']} threads), "
            f"batches of {sent['batch']:,}",
            f"{rate:,.0f} emails/s ({sent['seconds']:.1f} s; load {sent['load']})",
            "≥ 5,000/s",
        ],
        [
            "CPU per email: worker process / PostgreSQL backends",
            f"{sent['cpu_seconds'] / n * 1e6:,.0f} µs / "
            f"{sent['postgres_cpu_seconds'] / n * 1e6:,.0f} µs",
            "",
        ],
        [
            "dispatch outcome (deliveries by status; what the fake SendGrid received)",
            ", ".join(f"{k} {v:,}" for k, v in sorted(statuses.items()))
            + f"; received {sent['received']:,}, each delivery exactly once: "
            + (
                "yes"
                if once
                else f"**no** ({sent['received_once']:,} once, "
                f"{sent['received_twice']:,} more than once, {sent['received_unknown']:,} unknown)"
            ),
            "",
        ],
    ]


def dispatch_lines(sent: dict[str, Any]) -> list[str]:
    return [
        f"Dispatch only; load {_env.load_average()} at the end.",
        "",
        _env.table(["measure", "figure", "target"], dispatch_rows(sent)),
    ]


def run(args: argparse.Namespace) -> str:
    at = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
    lines: list[str] = []
    with _env.postgres_database(args.database_url, keep=args.keep) as database:
        engine = _env.engine_for(database)
        machine = _env.machine(engine)
        print(f"loading {args.customers:,} customers…", file=sys.stderr)
        loaded = data.load(engine, args.customers, at)
        with Session(engine) as session:
            campaign = _campaign(session, loaded.topic_id, "bench plan")
            session.commit()
            campaign_id = campaign.id
        print("planning…", file=sys.stderr)
        plan_load = _env.load_average()
        plan = measure_plan(database.url, campaign_id, at)
        sent = None
        if args.dispatch:
            print("dispatching…", file=sys.stderr)
            sent = measure_dispatch(engine, database.url, database.name, at, args)
        engine.dispose()
    if args.only == "dispatch":
        return "\n".join(dispatch_lines(sent))

    versus = None
    if args.naive:
        with _env.postgres_database(args.database_url, keep=args.keep) as database:
            engine = _env.engine_for(database)
            print(f"naive vs planner on {args.naive:,} customers…", file=sys.stderr)
            small = data.load(engine, args.naive, at)
            versus = measure_naive_vs_planner(engine, small.topic_id, at)
            engine.dispose()

    lines.append(f"Command: `{args.command}`")
    lines.append("")
    lines.append(
        "Machine: "
        + "; ".join(f"{k} {v}" for k, v in machine.items())
        + f"; load {_env.load_average()}."
    )
    lines.append("")
    counts = plan["counts"]
    rows = [
        [
            f"plan {args.customers:,} customers (PostgreSQL, one campaign, email/sms/post)",
            f"{plan['seconds']:.2f} s (load {plan_load} before)",
            "≤ 20 s",
        ],
    ]
    for label, (wall, cpu) in plan["steps"].items():
        cpu_text = f", {cpu:.2f} s CPU of the backend" if cpu == cpu else ""  # nan: unknown
        rows.append([f"  of which {label}", f"{wall:.2f} s{cpu_text}", ""])
    rows += [
        ["peak RSS of the planning process", f"{plan['rss_mb']:.0f} MB", "< 300 MB"],
        [
            "planned: contacted / deferred / skipped",
            f"{counts['contacted']:,} / {counts['deferred']:,} / "
            f"{sum(counts['skipped'].values()):,}",
            "",
        ],
    ]
    if sent is not None:
        rows += dispatch_rows(sent)
    if versus is not None:
        ratio = versus["naive"]["seconds"] / versus["planner"]["seconds"]
        rows.append(
            [
                f"naive ORM loop vs planner, {args.naive:,} customers",
                f"{versus['naive']['seconds']:.1f} s vs {versus['planner']['seconds']:.2f} s"
                f" = {ratio:,.0f} times",
                "",
            ]
        )
    lines.append(_env.table(["measure", "figure", "target"], rows))
    if versus is not None and versus["naive"]["contacted"] != versus["planner"]["contacted"]:
        lines.append("")
        lines.append(
            f"**The two plans differ**: naive contacted {versus['naive']['contacted']:,}, "
            f"planner {versus['planner']['contacted']:,}."
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_plan"]:
        _plan_child(*argv[1:4])
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench campaigns", description=__doc__)
    parser.add_argument("--database-url", default=_env.DEFAULT_POSTGRES_URL)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument(
        "--dispatch", type=int, default=50_000, help="emails to dispatch (0: planning only)"
    )
    parser.add_argument(
        "--naive", type=int, default=50_000, help="customers for the ratio (0: no ratio)"
    )
    parser.add_argument("--batch", type=int, default=campaign_tasks.BATCH, help="ids per message")
    parser.add_argument("--threads", type=int, default=8, help="the dispatch worker's threads")
    parser.add_argument("--only", choices=["all", "dispatch"], default="all")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    args.command = " ".join([".venv/bin/python -m bench campaigns", *argv])
    text = run(args)
    print(text)
    if args.write_docs:
        _docs.write_section("campaigns", "Campaign engine", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
