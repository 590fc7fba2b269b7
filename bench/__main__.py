"""``python -m bench [BENCHMARK] [options]``: run benchmarks, print figures, update the docs.

With no benchmark named, every benchmark runs with its default sizes (``make bench``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import _docs, _env
from . import policy as policy_bench

Runner = Callable[[argparse.Namespace, str], int]


def _command(argv: Sequence[str]) -> str:
    return shlex.join([".venv/bin/python", "-m", "bench", *argv])


def _run_policy(args: argparse.Namespace, command: str) -> int:
    options = policy_bench.Options(
        customers=args.customers,
        sqlite_customers=args.sqlite_customers,
        database_url=args.database_url,
        repeat=args.repeat,
        sample=args.sample,
        keep=args.keep,
        sqlite=not args.no_sqlite,
        postgres=not args.no_postgres,
        explain=args.explain is not None,
    )
    report = policy_bench.run(options, command, log=lambda line: print(line, file=sys.stderr))
    text = policy_bench.render(report)
    print(text)
    if report.explain is not None:
        if args.explain == "-":
            print("\n" + report.explain)
        else:
            Path(args.explain).write_text(report.explain + "\n")
            print(f"\nSQL and EXPLAIN (ANALYZE, BUFFERS) written to {args.explain}")
    if args.write_docs:
        _docs.write_section("policy", "Contact policy", text)
        print(f"\nUpdated {_docs.PERFORMANCE_MD}")
    return 0


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=_env.DEFAULT_POSTGRES_URL,
        help="PostgreSQL server to create the throw-away database prefcenter_bench_<random> "
        "on (default: %(default)s)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the benchmark databases (print where)"
    )
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="refresh this benchmark's section of docs/PERFORMANCE.md",
    )


def _policy_parser(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    parser.add_argument("--customers", type=int, default=1_000_000, help="PostgreSQL customers")
    parser.add_argument(
        "--sqlite-customers", type=int, default=100_000, help="SQLite customers (reference)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="measured set-based runs")
    parser.add_argument("--sample", type=int, default=1000, help="per-customer calls")
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite reference")
    parser.add_argument("--no-postgres", action="store_true", help="only the SQLite reference")
    parser.add_argument(
        "--explain",
        metavar="FILE",
        nargs="?",
        const="-",
        help="also EXPLAIN (ANALYZE, BUFFERS) the set-based query; to FILE or stdout",
    )


def _api_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "options", nargs=argparse.REMAINDER, help="passed to bench.api (see python -m bench.api -h)"
    )


def _run_api(args: argparse.Namespace, _command: str) -> int:
    from . import api  # the app and waitress: imported only when this benchmark runs

    return api.main(args.options)


def _run_campaigns(args: argparse.Namespace, _command: str) -> int:
    from . import campaigns  # the campaign engine: imported only when this benchmark runs

    return campaigns.main(args.options)


def _run_fallow(args: argparse.Namespace, _command: str) -> int:
    from . import fallow

    return fallow.main(args.options)


BENCHMARKS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Runner]] = {
    "policy": (
        "contact policy: set-based decisions for 1M customers, per-customer latency",
        _policy_parser,
        _run_policy,
    ),
    "api": (
        "loyalty REST API: preferences latency, interactions per second (bench/api.py)",
        _api_parser,
        _run_api,
    ),
    "campaigns": (
        "campaign engine: plan 1M customers (time, RSS), dispatch emails/s, naive vs planner",
        _api_parser,
        _run_campaigns,
    ),
    "fallow": (
        "SendGrid event webhook events/s; dormancy over 1M customers, 10M interactions",
        _api_parser,
        _run_fallow,
    ),
}


# Benchmarks with a parser of their own: everything after the name is theirs.
PASS_THROUGH = ("api", "campaigns", "fallow")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASS_THROUGH and not {"-h", "--help"} & set(argv[:1]):
        options = argparse.Namespace(options=argv[1:])
        return BENCHMARKS[argv[0]][2](options, _command(argv))
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None
    )
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    for name, (help_text, configure, _runner) in BENCHMARKS.items():
        configure(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)

    if args.benchmark is not None:
        return BENCHMARKS[args.benchmark][2](args, _command(argv))
    status = 0
    for name, (_help, configure, runner) in BENCHMARKS.items():
        sub_parser = argparse.ArgumentParser(prog=f"python -m bench {name}")
        configure(sub_parser)
        print(f"## {name}\n", flush=True)
        status = runner(sub_parser.parse_args([]), _command([name])) or status
    return status


if __name__ == "__main__":
    sys.exit(main())
