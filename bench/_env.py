"""Where a benchmark runs: throw-away databases, the machine, timing helpers."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from prefcenter.db import make_engine
from prefcenter.migrate import upgrade

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class BenchDatabase:
    backend: str  # postgresql | sqlite
    url: str
    name: str  # database name or file path
    migrate_seconds: float


@contextlib.contextmanager
def postgres_database(admin_url: str, *, keep: bool = False) -> Iterator[BenchDatabase]:
    """A fresh database ``prefcenter_bench_<random>`` on the server, migrated to head."""
    name = f"prefcenter_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        started = time.perf_counter()
        upgrade(url)
        yield BenchDatabase("postgresql", url, name, time.perf_counter() - started)
    finally:
        if keep:
            print(f"kept database {name}: {_hide_password(url)}")
        else:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextlib.contextmanager
def sqlite_database(*, keep: bool = False) -> Iterator[BenchDatabase]:
    """A fresh SQLite file in a temporary directory, migrated to head."""
    directory = Path(tempfile.mkdtemp(prefix="prefcenter_bench_"))
    path = directory / "bench.sqlite"
    url = f"sqlite:///{path}"
    try:
        started = time.perf_counter()
        upgrade(url)
        yield BenchDatabase("sqlite", url, str(path), time.perf_counter() - started)
    finally:
        if keep:
            print(f"kept database {path}")
        else:
            for file in directory.iterdir():
                file.unlink()
            directory.rmdir()


def engine_for(database: BenchDatabase) -> sa.Engine:
    return make_engine(database.url)


def _hide_password(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


# --------------------------------------------------------------------------- the machine


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process on this machine has used so far (Linux /proc);
    None when it cannot be read (a remote database server, a process gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(engine: sa.Engine | None = None) -> dict[str, str]:
    """What the figures were measured on, read from the machine itself."""
    memory = _memory_gib()
    facts = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": f"{os.cpu_count()} ({_cpu_model()})",
        "memory": f"{memory:.1f} GiB" if memory else "unknown",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlalchemy": sa.__version__,
    }
    if engine is not None and engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            facts["postgresql"] = str(connection.exec_driver_sql("SHOW server_version").scalar())
            settings = ", ".join(
                f"{name}={connection.exec_driver_sql(f'SHOW {name}').scalar()}"
                for name in (
                    "shared_buffers",
                    "work_mem",
                    "max_parallel_workers_per_gather",
                    "jit",
                )
            )
            facts["postgresql settings"] = settings
    return facts


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (a busy machine makes figures a floor)."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timings:
    """Repeated measurements of one thing, in seconds."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile (p in 0..100)."""
        ordered = sorted(self.samples)
        rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
        return ordered[rank - 1]

    @property
    def best(self) -> float:
        return min(self.samples)


def repeat(fn: Callable[[], object], times: int) -> Timings:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return Timings(tuple(samples))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (also readable as plain text)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [
        all(_looks_numeric(row[i]) or row[i] in ("", "-") for row in cells[1:])
        and any(_looks_numeric(row[i]) for row in cells[1:])
        for i in range(len(headers))
    ]

    def line(row: Sequence[str]) -> str:
        padded = [
            c.rjust(widths[i]) if numeric[i] else c.ljust(widths[i]) for i, c in enumerate(row)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        "-" * (w + 1) + ":" if numeric[i] else "-" * (w + 2) for i, w in enumerate(widths)
    )
    return "\n".join([line(cells[0]), rule + "|", *(line(r) for r in cells[1:])])


def _looks_numeric(text: str) -> bool:
    stripped = text.replace(",", "").replace("%", "").replace(" ms", "").replace(" s", "")
    try:
        float(stripped)
    except ValueError:
        return False
    return True
