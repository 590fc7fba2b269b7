"""Loyalty API benchmark: ``.venv/bin/python -m bench.api [--write-docs]``.

Serves the real app through waitress on a throw-away PostgreSQL database and measures
``GET /api/v1/customers/{id}/preferences`` latency with 50 concurrent clients (keep-alive
connections), then interactions ingested per second in 1,000-item batches.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from waitress.server import create_server

from prefcenter import make_wsgi_app
from prefcenter.models import Customer, Topic
from prefcenter.services.apikeys import create_api_key
from prefcenter.settings import resolve_settings

from . import _docs, _env


def _seed(url: str, customers: int) -> str:
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
    with sa.orm.Session(engine) as session:
        _key, plaintext = create_api_key(
            session, "bench", ["preferences:read", "interactions:write"]
        )
        session.commit()
    engine.dispose()
    return plaintext


def time_now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _get_latencies(
    port: int, key: str, customers: int, clients: int, requests: int
) -> tuple[list[float], float, int]:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {key}"}

    def client(seed: int) -> None:
        rng = random.Random(seed)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        for _ in range(requests):
            path = f"/api/v1/customers/B-{rng.randrange(customers):07d}/preferences"
            started = time.perf_counter()
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            if response.status != 200:
                with lock:
                    errors[0] += 1
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - started, errors[0]


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


def run(args: argparse.Namespace) -> str:
    load = os.getloadavg()[0]
    with _env.postgres_database(args.database_url) as database:
        key = _seed(database.url, args.customers)
        settings = resolve_settings(
            {
                "sqlalchemy.url": database.url,
                "dramatiq.broker_url": "stub://",
                "prefcenter.secret": "bench-secret-" + "x" * 40,
                "prefcenter.api.burst": "100000000",
                "prefcenter.api.rate_per_second": "100000000",
                "prefcenter.api.validate_responses": str(args.validate_responses).lower(),
            },
            environ={},
        )
        app = make_wsgi_app(settings)
        server = create_server(app, host="127.0.0.1", port=0, threads=args.threads)
        port = server.effective_port
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            _get_latencies(port, key, args.customers, 10, 20)  # warm up
            latencies, wall, errors = _get_latencies(
                port, key, args.customers, args.clients, args.requests
            )
            ingest_seconds, created = _ingest(port, key, args.customers, args.batches)
            facts = _env.machine(app.registry["dbbind"])
        finally:
            server.close()
            app.registry["dbbind"].dispose()
    ms = [x * 1000 for x in latencies]
    lines = [
        f"Measured {facts['date']} on {facts['cpus']}, {facts['memory']}, "
        f"PostgreSQL {facts.get('postgresql', '?')}, Python {facts['python']}; "
        f"waitress with {args.threads} threads in one process, {args.customers:,} customers, "
        f"response validation {'on' if args.validate_responses else 'off'}; "
        f"load average before the run {load:.1f} (other processes share the machine).",
        "",
        "| measure | figure | target |",
        "|---|---|---|",
        f"| `GET …/preferences`, {args.clients} concurrent clients: p50 | "
        f"{statistics.median(ms):.1f} ms | |",
        f"| same: p99 | {_percentile(ms, 0.99):.1f} ms | < 50 ms |",
        f"| same: throughput | {len(ms) / wall:,.0f} requests/s ({errors} errors) | |",
        f"| `POST /api/v1/interactions`, 1,000-item batches | "
        f"{created / ingest_seconds:,.0f} interactions/s ({args.batches} batches) | ≥ 5,000/s |",
        "",
        "Command: `.venv/bin/python -m bench.api --write-docs`.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__)
    parser.add_argument("--database-url", default=_env.DEFAULT_POSTGRES_URL)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=100, help="per client")
    parser.add_argument("--threads", type=int, default=8, help="waitress threads")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--validate-responses", action="store_true")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    text = run(args)
    print(text)
    if args.write_docs:
        _docs.write_section("api", "Loyalty API", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
