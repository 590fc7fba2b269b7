"""Workers: the ping actor in-process, then `prefcenter worker` processes on Redis and RabbitMQ.

The broker tests start a real worker process against a throw-away PostgreSQL database,
ping it with `prefcenter ping-worker` and check that the ping row was written by that
process. Each run uses its own queue, so parallel runs on one broker do not interfere.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy.orm import Session

from prefcenter import cli, tasks
from prefcenter.broker import use_broker
from prefcenter.db import make_engine
from prefcenter.migrate import upgrade
from prefcenter.models import WorkerPing
from prefcenter.settings import resolve_settings
from tests.conftest import TEST_SECRET, create_test_database, need_service

SCRIPT = str(Path(sys.executable).with_name("prefcenter"))
REDIS_URL = os.environ.get("PREFCENTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
RABBITMQ_URL = os.environ.get("PREFCENTER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
OVERRIDES = ("DATABASE_URL", "BROKER_URL", "SENDGRID_API_KEY", "PREFCENTER_SECRET")


def ping_row(url: str, nonce: str) -> WorkerPing | None:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            return session.get(WorkerPing, nonce)
    finally:
        engine.dispose()


# -- the actor, in this process ------------------------------------------------------------


@pytest.fixture
def configured_tasks(database) -> Iterator[str]:
    tasks.configure({"sqlalchemy.url": database.url})
    yield database.url
    tasks.dispose()


def test_record_worker_ping_writes_one_row_however_often_it_runs(configured_tasks):
    nonce = uuid.uuid4().hex
    sent_at = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)

    tasks.record_worker_ping(nonce, sent_at.isoformat())
    first = ping_row(configured_tasks, nonce)
    tasks.record_worker_ping(nonce, (sent_at + dt.timedelta(seconds=5)).isoformat())
    second = ping_row(configured_tasks, nonce)

    assert first is not None
    assert first.worker == f"{socket.gethostname()}:{os.getpid()}"
    assert first.sent_at == sent_at
    assert (second.sent_at, second.received_at) == (first.sent_at, first.received_at)


def test_record_worker_ping_runs_through_a_broker_and_a_worker(configured_tasks):
    broker = StubBroker()
    broker.emit_after("process_boot")
    use_broker(broker)
    worker = dramatiq.Worker(broker, worker_threads=1)
    worker.start()
    try:
        nonce = uuid.uuid4().hex
        message = tasks.record_worker_ping.send(nonce, dt.datetime.now(dt.UTC).isoformat())
        broker.join(message.queue_name, fail_fast=True)
        worker.join()
    finally:
        worker.stop()
        broker.close()
    assert ping_row(configured_tasks, nonce) is not None


def test_an_unconfigured_worker_says_what_to_do():
    tasks.dispose()
    with pytest.raises(RuntimeError, match=r"call prefcenter.tasks.configure\(settings\)"):
        tasks.record_worker_ping("x", dt.datetime.now(dt.UTC).isoformat())


# -- worker processes on real brokers ---------------------------------------------------------


@pytest.fixture(scope="module")
def postgres(tmp_path_factory) -> Iterator[str]:
    db = create_test_database("postgresql", tmp_path_factory)
    try:
        upgrade(db.url)
        yield db.url
    finally:
        db.drop()


@pytest.fixture
def redis_url() -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        need_service("Redis", f"{REDIS_URL}: {exc}")
    yield REDIS_URL
    client.close()


@pytest.fixture
def rabbitmq_url() -> str:
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL)).close()
    except pika.exceptions.AMQPError as exc:
        need_service("RabbitMQ", f"{RABBITMQ_URL}: {exc!r}")
    return RABBITMQ_URL


@pytest.fixture
def queue(request) -> Iterator[str]:
    """A queue of this test's own, removed from the broker afterwards."""
    name = f"test-ping-{uuid.uuid4().hex[:12]}"
    yield name
    if "redis_url" in request.fixturenames:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"*{name}*"))
        if keys:
            client.delete(*keys)
        client.close()
    if "rabbitmq_url" in request.fixturenames:
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
        channel = connection.channel()
        for suffix in ("", ".DQ", ".XQ"):
            channel.queue_delete(name + suffix)
        connection.close()


def write_ini(directory: Path) -> str:
    path = directory / "worker.ini"
    path.write_text(
        "\n".join(
            [
                "[app:main]",
                "use = egg:prefcenter",
                f"prefcenter.secret = {TEST_SECRET}",
                "[loggers]",
                "keys = root",
                "[handlers]",
                "keys = console",
                "[formatters]",
                "keys = generic",
                "[logger_root]",
                "level = INFO",
                "handlers = console",
                "[handler_console]",
                "class = StreamHandler",
                "args = (sys.stderr,)",
                "formatter = generic",
                "[formatter_generic]",
                "format = %(levelname)s [%(name)s] %(message)s",
                "",
            ]
        )
    )
    return str(path)


def environment(database_url: str, broker_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
    return {**env, "DATABASE_URL": database_url, "BROKER_URL": broker_url}


def start_worker(ini: str, env: dict[str, str], queue: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [SCRIPT, "-c", ini, "worker", "--queues", queue, "--threads", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_worker(worker: subprocess.Popen[str]) -> tuple[int, float, str]:
    """SIGTERM the worker; return its exit code, how long it took and its log."""
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    try:
        code = worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
        raise
    finally:
        log = worker.stderr.read()
        worker.stdout.close()
        worker.stderr.close()
    return code, time.monotonic() - started, log


@pytest.mark.integration
def test_a_worker_on_redis_answers_ping_worker(postgres, redis_url, queue, tmp_path):
    worker = start_worker(write_ini(tmp_path), environment(postgres, redis_url), queue)
    settings = resolve_settings(
        {
            "sqlalchemy.url": postgres,
            "dramatiq.broker_url": redis_url,
            "prefcenter.secret": TEST_SECRET,
        },
        environ={},
    )
    try:
        pong = cli.ping_worker(settings, timeout=30, queue=queue)
    finally:
        code, took, log = stop_worker(worker)

    assert pong.worker == f"{socket.gethostname()}:{worker.pid}"
    assert pong.queue == queue
    assert 0 < pong.round_trip_ms < 30_000
    assert code == 0, log
    assert took < 10
    assert f"worker {pong.worker} started" in log
    assert f"worker {pong.worker} stopped" in log
    row = ping_row(postgres, pong.nonce)
    assert row is not None and row.worker == pong.worker


@pytest.mark.integration
def test_a_worker_on_rabbitmq_answers_the_ping_worker_command(
    postgres, rabbitmq_url, queue, tmp_path
):
    ini = write_ini(tmp_path)
    env = environment(postgres, rabbitmq_url)
    worker = start_worker(ini, env, queue)
    try:
        ping = subprocess.run(
            [SCRIPT, "-c", ini, "ping-worker", "--queue", queue, "--timeout", "30"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        code, took, log = stop_worker(worker)

    assert ping.returncode == 0, ping.stderr
    expected = f"worker {socket.gethostname()}:{worker.pid} answered on queue {queue!r} in "
    assert ping.stdout.startswith(expected), ping.stdout
    assert code == 0, log
    assert took < 10
    assert "stopped" in log


@pytest.mark.integration
def test_ping_worker_times_out_clearly_when_no_worker_listens(postgres, redis_url, queue, tmp_path):
    ini = write_ini(tmp_path)
    started = time.monotonic()
    ping = subprocess.run(
        [SCRIPT, "-c", ini, "ping-worker", "--queue", queue, "--timeout", "1"],
        env=environment(postgres, redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ping.returncode == 1
    assert f"no worker answered within 1 s on queue {queue!r} of {redis_url}" in ping.stderr
    assert "start one with `prefcenter worker`" in ping.stderr
    assert time.monotonic() - started < 30
