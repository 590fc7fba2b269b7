"""Loyalty API benchmark: ``.venv/bin/python -m bench.api [--write-docs]``.

Serves the real app through waitress on a throw-away PostgreSQL database and measures
``GET /api/v1/customers/{id}/preferences`` latency with 50 concurrent clients (keep-alive
connections), then interactions ingested per second in 1,000-item batches.

The server runs in its own process(es) and the clients in others, so the clients never
take the server's GIL: the figures are the server's. With ``--processes 2`` two waitress
processes serve (each as ``prefcenter serve`` would, on its own port) and the 50 client
connections are spread over them round-robin, as a proxy in front of several ``serve``
processes would (docs/operations.md, "Scaling"); there is no proxy hop in the figure.
"""

from __future__ import annotations

import argparse
import configparser
import http.client
import json
import logging
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from . import _docs, _env

# Worker processes are started fresh (not forked from a process with threads and pools).
_MP = multiprocessing.get_context("spawn")


def time_now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)


def _seed(url: str, customers: int) -> str:
    from prefcenter.models import Customer, Topic
    from prefcenter.services.apikeys import create_api_key

    engine = sa.create_engine(url)
    now = sa.func.now()
    with engine.begin() as connection:
        for start in range(0, customers, 5000):
            connection.execute(
                sa.insert(Customer),
                [
                    {
                        "id": uuid.uuid4(),
                        "external_id": f"B-{n:07d}",
                        "email": f"member{n}@example.com",
                        "phone": f"+3361{n:07d}" if n % 2 else None,
                        "locale": "fr",
                        "timezone": "Europe/Paris",
                        "attributes": {"tier": "gold"},
                        "created_at": time_now(),
                        "updated_at": time_now(),
                    }
                    for n in range(start, min(start + 5000, customers))
                ],
            )
        for key in ("offers", "newsletter", "points"):
            connection.execute(
                sa.insert(Topic).values(
                    id=uuid.uuid4(),
                    key=key,
                    names={"fr": key, "en": key},
                    descriptions={},
                    kind="alert" if key == "points" else "marketing",
                    regime="opt_out" if key == "points" else "opt_in",
                    active=True,
                    created_at=now,
                    updated_at=now,
                )
            )
        # Stored choices, so the read joins real rows: n = the member number.
        member = "right(c.external_id, 7)::int"
        connection.exec_driver_sql(
            "INSERT INTO channel_consents (id, customer_id, channel, status, source, mechanism,"
            " granted_at, refused_at, confirmation_attempts, created_at, updated_at)"
            " SELECT gen_random_uuid(), c.id, ch.channel,"
            f" CASE WHEN mod({member}, 5) = 0 THEN 'refused' ELSE 'granted' END,"
            " 'bench', 'api_proof',"
            f" CASE WHEN mod({member}, 5) = 0 THEN NULL ELSE now() END,"
            f" CASE WHEN mod({member}, 5) = 0 THEN now() END, 0, now(), now()"
            " FROM customers c CROSS JOIN (VALUES ('email', 3), ('sms', 2), ('post', 4)) AS"
            f" ch(channel, every) WHERE mod({member}, ch.every) <> 0"
        )
        connection.exec_driver_sql(
            "INSERT INTO contact_preferences (customer_id, frequency, channel_order,"
            " contact_start, contact_end, paused_until, created_at, updated_at)"
            f" SELECT c.id, (ARRAY['any', 'weekly', 'monthly'])[mod({member}, 3) + 1],"
            f" CASE WHEN mod({member}, 4) = 0 THEN 'sms,email' ELSE '' END,"
            f" CASE WHEN mod({member}, 3) = 0 THEN 480 END,"
            f" CASE WHEN mod({member}, 3) = 0 THEN 1260 END,"
            f" CASE WHEN mod({member}, 20) = 0 THEN now() + interval '30 days' END, now(), now()"
            f" FROM customers c WHERE mod({member}, 2) = 0"
        )
        connection.exec_driver_sql(
            "INSERT INTO topic_subscriptions (customer_id, topic_id, status, frequency,"
            " created_at, updated_at)"
            f" SELECT c.id, t.id, CASE WHEN mod({member}, 7) = 0 THEN 'unsubscribed'"
            " ELSE 'subscribed' END,"
            f" CASE WHEN t.key = 'offers' AND mod({member}, 3) = 0 THEN 'monthly' END, now(), now()"
            " FROM customers c CROSS JOIN topics t"
            f" WHERE t.key <> 'points' AND mod({member}, 10) < 6"
        )
        connection.exec_driver_sql("ANALYZE")
    with sa.orm.Session(engine) as session:
        _key, plaintext = create_api_key(
            session, "bench", ["preferences:read", "interactions:write"]
        )
        session.commit()
    engine.dispose()
    return plaintext


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --------------------------------------------------------------------------- the server


def _serve(url: str, threads: int, validate_responses: bool, pre_ping: bool, ports: Any) -> None:
    """One web process: the app as ``prefcenter serve`` builds it, under waitress."""
    from waitress.server import create_server

    from prefcenter import make_wsgi_app
    from prefcenter.cli import settle_heap
    from prefcenter.db import DBBIND_KEY, make_engine
    from prefcenter.settings import resolve_settings

    # "Task queue depth is N" on every request once all threads are busy says nothing new.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    settings = resolve_settings(
        {
            "sqlalchemy.url": url,
            "dramatiq.broker_url": "stub://",
            "prefcenter.secret": "bench-secret-" + "x" * 40,
            "prefcenter.api.burst": "100000000",
            "prefcenter.api.rate_per_second": "100000000",
            "prefcenter.api.validate_responses": str(validate_responses).lower(),
        },
        environ={},
    )
    if pre_ping:  # the engine as it was before 2026-12-01 (--pre-ping), for comparison
        settings[DBBIND_KEY] = make_engine(url, pool_pre_ping=True)
    app = make_wsgi_app(settings)
    settle_heap()  # as `prefcenter serve` does before it serves
    server = create_server(app, host="127.0.0.1", port=0, threads=threads)
    ports.put((os.getpid(), int(server.effective_port)))
    server.run()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of one of our web processes so far."""
    cpu = _env.cpu_seconds(pid)
    if cpu is None:
        raise RuntimeError(f"cannot read the CPU time of web process {pid}")
    return cpu


# --------------------------------------------------------------------------- the clients


def _read_response(sock: socket.socket, pending: bytes) -> tuple[int, bytes]:
    """Read one HTTP/1.1 response with a Content-Length; return (status, what follows)."""
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        pending += chunk
    head, _, rest = pending.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = next(
        int(value)
        for name, _, value in (line.partition(b":") for line in lines[1:])
        if name.strip().lower() == b"content-length"
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        rest += chunk
    return status, rest[length:]


def _get_client(
    port: int, key: str, customers: int, requests: int, seed: int
) -> tuple[list[float], int]:
    """One keep-alive client sending the next request as soon as the last is answered."""
    rng = random.Random(seed)
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pending, latencies, errors = b"", [], 0
    try:
        for _ in range(requests):
            path = f"/api/v1/customers/B-{rng.randrange(customers):07d}/preferences"
            request = (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {key}\r\nAccept: application/json\r\n\r\n"
            ).encode()
            started = time.perf_counter()
            sock.sendall(request)
            status, pending = _read_response(sock, pending)
            latencies.append(time.perf_counter() - started)
            errors += status != 200
    finally:
        sock.close()
    return latencies, errors


def _client_process(
    clients: Sequence[tuple[int, int]],
    key: str,
    customers: int,
    requests: int,
    start: Any,
    results: Any,
) -> None:
    """Several clients (threads) of one client process; (port, seed) per client."""
    found: list[tuple[list[float], int]] = []
    lock = threading.Lock()

    def client(port: int, seed: int) -> None:
        outcome = _get_client(port, key, customers, requests, seed)
        with lock:
            found.append(outcome)

    threads = [threading.Thread(target=client, args=c) for c in clients]
    start.wait()
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ended = time.monotonic()
    latencies = [x for lat, _ in found for x in lat]
    results.put((latencies, sum(e for _, e in found), began, ended))


def _get_latencies(
    ports: Sequence[int], key: str, customers: int, clients: int, requests: int, processes: int
) -> tuple[list[float], float, int]:
    """``clients`` keep-alive clients in ``processes`` client processes, spread over ports."""
    assignment = [(ports[n % len(ports)], n) for n in range(clients)]
    start = _MP.Event()
    results = _MP.Queue()
    workers = [
        _MP.Process(
            target=_client_process,
            args=(assignment[p::processes], key, customers, requests, start, results),
            daemon=True,
        )
        for p in range(processes)
    ]
    for worker in workers:
        worker.start()
    time.sleep(2)  # let the client processes import and wait at the start line
    start.set()
    outcomes = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
    latencies = [x for lat, _e, _b, _f in outcomes for x in lat]
    wall = max(o[3] for o in outcomes) - min(o[2] for o in outcomes)
    return latencies, wall, sum(o[1] for o in outcomes)


_WRK_SCRIPT = """
local customers = tonumber(os.getenv("BENCH_CUSTOMERS"))
local headers = {["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY"),
                 ["Accept"] = "application/json"}
local out = os.getenv("BENCH_OUT")
math.randomseed(tonumber(os.getenv("BENCH_SEED")))

request = function()
  local path = string.format("/api/v1/customers/B-%07d/preferences", math.random(0, customers - 1))
  return wrk.format("GET", path, headers)
end

done = function(summary, latency, requests)
  local f = io.open(out, "w")
  f:write(string.format('{"requests": %d, "duration_us": %d, "status_errors": %d, ',
    summary.requests, summary.duration, summary.errors.status))
  f:write(string.format('"socket_errors": %d, "histogram": [',
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
  for i = 1, #latency do
    local value, count = latency(i)
    if i > 1 then f:write(",") end
    f:write(string.format("[%d,%d]", value, count))
  end
  f:write("]}")
  f:close()
end
"""


def _wrk_latencies(
    ports: Sequence[int], key: str, customers: int, clients: int, duration: float
) -> tuple[list[float], float, int]:
    """wrk (C, one thread per port) with the clients spread over the ports: every latency."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "preferences.lua"
        script.write_text(_WRK_SCRIPT)
        runs = []
        for n, port in enumerate(ports):
            connections = clients // len(ports) + (n < clients % len(ports))
            out = Path(tmp) / f"wrk-{port}.json"
            env = {
                **os.environ,
                "BENCH_CUSTOMERS": str(customers),
                "BENCH_KEY": key,
                "BENCH_OUT": str(out),
                "BENCH_SEED": str(1000 + n),
            }
            command = [
                "wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "30s",
                "-s", str(script), f"http://127.0.0.1:{port}",
            ]  # fmt: skip
            runs.append((subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL), out))
        results = []
        for process, out in runs:
            if process.wait() != 0:
                raise RuntimeError(f"wrk exited with {process.returncode}")
            results.append(json.loads(out.read_text()))
    latencies = [
        value / 1e6 for r in results for value, count in r["histogram"] for _ in range(count)
    ]
    wall = max(r["duration_us"] for r in results) / 1e6
    errors = sum(r["status_errors"] + r["socket_errors"] for r in results)
    return latencies, wall, errors


def _ingest(port: int, key: str, customers: int, batches: int) -> tuple[float, int]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    rng = random.Random(7)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    created = 0
    elapsed = 0.0
    for batch in range(batches):
        body = json.dumps(
            {
                "interactions": [
                    {
                        "external_id": f"B-{rng.randrange(customers):07d}",
                        "kind": "purchase",
                        "occurred_at": "2026-03-01T10:00:00Z",
                        "idempotency_key": f"bench-{batch}-{n}",
                        "data": {"amount": 12.5},
                    }
                    for n in range(1000)
                ]
            }
        ).encode()
        started = time.perf_counter()
        connection.request("POST", "/api/v1/interactions", body=body, headers=headers)
        response = connection.getresponse()
        payload = json.loads(response.read())
        elapsed += time.perf_counter() - started
        created += payload["created"]
    connection.close()
    return elapsed, created


# --------------------------------------------------------------------------- one run


def _measure(
    args: argparse.Namespace, url: str, key: str, processes: int, ingest: bool
) -> dict[str, Any]:
    queue = _MP.Queue()
    servers = [
        _MP.Process(
            target=_serve,
            args=(url, args.threads, args.validate_responses, args.pre_ping, queue),
            daemon=True,
        )
        for _ in range(processes)
    ]
    for server in servers:
        server.start()
    try:
        started = [queue.get(timeout=120) for _ in servers]
        pids = [pid for pid, _port in started]
        ports = [port for _pid, port in started]
        for port in ports:  # warm up: connections, prepared statements, the key cache
            _get_client(port, key, args.customers, 200, seed=-port)
        load = os.getloadavg()[0]
        cpu_before = sum(_cpu_seconds(pid) for pid in pids)
        if args.client == "wrk":
            latencies, wall, errors = _wrk_latencies(
                ports, key, args.customers, args.clients, args.duration
            )
        else:
            latencies, wall, errors = _get_latencies(
                ports, key, args.customers, args.clients, args.requests, args.client_processes
            )
        cpu = sum(_cpu_seconds(pid) for pid in pids) - cpu_before
        figures: dict[str, Any] = {
            "processes": processes,
            "load": load,
            "ms": [x * 1000 for x in latencies],
            "wall": wall,
            "errors": errors,
            "cpu_ms": 1000 * cpu / max(1, len(latencies)),
        }
        if ingest:
            seconds, created = _ingest(ports[0], key, args.customers, args.batches)
            figures["ingest"] = created / seconds
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.join()
    return figures


def run(args: argparse.Namespace) -> str:
    with _env.postgres_database(args.database_url) as database:
        key = _seed(database.url, args.customers)
        runs = [
            _measure(args, database.url, key, processes, ingest=index == 0)
            for index, processes in enumerate(args.processes)
        ]
        engine = sa.create_engine(database.url)
        facts = _env.machine(engine)
        engine.dispose()
    variant = "; engine WITH pool_pre_ping (a variant, not the code as it is)"
    variant = variant if args.pre_ping else ""
    clients_text = (
        f"from wrk ({args.duration:g} s per run, one wrk thread per web process)"
        if args.client == "wrk"
        else f"in {args.client_processes} Python client processes (not the server's)"
    )
    lines = [
        f"Measured {facts['date']} on {facts['cpus']}, {facts['memory']}, "
        f"PostgreSQL {facts.get('postgresql', '?')}, Python {facts['python']}; "
        f"{args.customers:,} customers (with consents, preferences and subscriptions); "
        f"waitress with {args.threads} thread{'s' if args.threads != 1 else ''} per process "
        f"(production.ini's); {args.clients} keep-alive clients "
        f"{clients_text}; "
        f"requests validated against openapi.yaml, response validation "
        f"{'on' if args.validate_responses else 'off'}{variant}.",
        "",
        "| measure | web processes | figure | target |",
        "|---|---:|---|---|",
    ]
    for figures in runs:
        ms, n = figures["ms"], figures["processes"]
        lines += [
            f"| `GET …/preferences`, {args.clients} concurrent clients: p50 | {n} | "
            f"{statistics.median(ms):.1f} ms | |",
            f"| same: p99 | {n} | {_percentile(ms, 0.99):.1f} ms | < 50 ms |",
            f"| same: throughput | {n} | {len(ms) / figures['wall']:,.0f} requests/s "
            f"({figures['errors']} errors; load average {figures['load']:.1f} before) | |",
            f"| same: server CPU per request | {n} | {figures['cpu_ms']:.2f} ms | |",
        ]
    first = runs[0]
    lines += [
        f"| `POST /api/v1/interactions`, 1,000-item batches | {first['processes']} | "
        f"{first['ingest']:,.0f} interactions/s ({args.batches} batches) | ≥ 5,000/s |",
        "",
        f"Command: `.venv/bin/python -m bench.api {' '.join(args.argv)}`.",
    ]
    return "\n".join(lines)


def _production_threads() -> int:
    """The ``threads`` production.ini gives waitress: the benchmark serves as shipped."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(Path(__file__).resolve().parent.parent / "production.ini")
    return ini.getint("server:main", "threads")


def _process_counts(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__)
    parser.add_argument("--database-url", default=_env.DEFAULT_POSTGRES_URL)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--requests", type=int, default=200, help="per client")
    parser.add_argument(
        "--threads",
        type=int,
        default=_production_threads(),
        help="waitress threads per process (default: production.ini's)",
    )
    parser.add_argument(
        "--processes",
        type=_process_counts,
        default=[1, 2],
        help="web processes, one run per count (comma-separated; default 1,2)",
    )
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument(
        "--validate-responses",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="check every answer against openapi.yaml, as production does (default: on)",
    )
    parser.add_argument(
        "--pre-ping",
        action="store_true",
        help="serve with pool_pre_ping (a ping per request; prefcenter/db.py pings only"
        " connections idle for 10 s)",
    )
    parser.add_argument(
        "--client",
        choices=("wrk", "python"),
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator: wrk (Debian's package; default when installed) or the"
        " benchmark's own Python clients",
    )
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds of load per run (wrk)"
    )
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    text = run(args)
    print(text)
    if args.write_docs:
        _docs.write_section("api", "Loyalty API", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
