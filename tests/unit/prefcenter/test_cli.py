"""The `prefcenter` command line, in-process through main() and as the installed script.

Every test gets its own empty database (SQLite, and PostgreSQL when configured) and an
ini file pointing at it.
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa
from pyramid.config import Configurator

from prefcenter import cli
from prefcenter.db import make_engine
from prefcenter.models import ApiKey, User
from prefcenter.seed import DEMO_API_KEY
from prefcenter.services.apikeys import find_api_key
from prefcenter.services.users import authenticate
from tests.conftest import TEST_SECRET, create_test_database

SCRIPT = str(Path(sys.executable).with_name("prefcenter"))
COMMANDS = (
    "migrate",
    "downgrade",
    "check-migrations",
    "seed-demo",
    "create-user",
    "create-api-key",
    "revoke-api-key",
    "worker",
    "ping-worker",
    "serve",
    "campaign",
    "scheduler",
)
OVERRIDES = ("DATABASE_URL", "BROKER_URL", "SENDGRID_API_KEY", "PREFCENTER_SECRET")


@pytest.fixture(autouse=True)
def no_environment_overrides(monkeypatch):
    """The ini file under test decides; a DATABASE_URL in the shell must not."""
    for name in OVERRIDES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def blank_database(request, tmp_path_factory):
    """An empty database (no tables) of its own for each test."""
    db = create_test_database(request.param, tmp_path_factory)
    yield db
    db.drop()


def write_ini(directory: Path, url: str, **settings: str) -> str:
    values = {
        "sqlalchemy.url": url,
        "prefcenter.secret": TEST_SECRET,
        "prefcenter.demo": "true",
        "dramatiq.broker_url": "stub://",
        **settings,
    }
    lines = ["[app:main]", "use = egg:prefcenter"]
    lines += [f"{key} = {value}" for key, value in values.items() if value is not None]
    lines += ["", "[server:main]", "use = egg:waitress#main", "listen = 127.0.0.1:6543", ""]
    path = directory / "test.ini"
    path.write_text("\n".join(lines))
    return str(path)


@pytest.fixture
def ini(blank_database, tmp_path) -> str:
    return write_ini(tmp_path, blank_database.url)


@pytest.fixture
def migrated_ini(ini, capsys) -> str:
    assert cli.main(["-c", ini, "migrate"]) == 0
    capsys.readouterr()
    return ini


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def table_names(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def query(url: str, fn):
    engine = make_engine(url)
    try:
        with sa.orm.Session(engine) as session:
            return fn(session)
    finally:
        engine.dispose()


def script(*argv: str, **kwargs) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
    return subprocess.run(
        [SCRIPT, *argv], capture_output=True, text=True, timeout=120, env=env, **kwargs
    )


# -- help and configuration -------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_help_with_a_description(command, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: prefcenter {command}")
    description = out.split("\n\n")[1]
    assert len(description) > 20, out


def test_a_missing_config_file_is_named(capsys, tmp_path):
    missing = str(tmp_path / "nowhere.ini")
    code, _, err = run(capsys, "-c", missing, "seed-demo")
    assert code == 2
    assert f"--config: {missing!r} does not exist" in err


def test_an_incomplete_configuration_names_each_problem(capsys, tmp_path):
    ini = write_ini(tmp_path, "sqlite://", **{"prefcenter.secret": None})
    code, out, err = run(capsys, "-c", ini, "create-api-key", "--name", "k", "--scopes", "gdpr")
    assert code == 2
    assert "prefcenter.secret (PREFCENTER_SECRET): must be at least 32 characters" in err
    assert out == ""


def test_the_config_may_also_follow_the_command(capsys, ini):
    code, out, _ = run(capsys, "migrate", "-c", ini)
    assert code == 0
    assert "is at revision" in out


# -- migrations -----------------------------------------------------------------------


def test_migrate_creates_the_schema_and_is_repeatable(capsys, ini, blank_database):
    code, out, _ = run(capsys, "-c", ini, "migrate")
    assert code == 0
    heads = cli.migrations.current_heads(blank_database.url)
    assert out.strip().endswith(f"is at revision {', '.join(sorted(heads))}")
    assert {"customers", "users", "api_keys", "worker_pings"} <= table_names(blank_database.url)
    assert run(capsys, "-c", ini, "migrate")[0] == 0


def test_migrate_needs_only_the_database_url(capsys, blank_database, tmp_path):
    # e.g. a deployment step run before the secrets are configured
    ini = write_ini(tmp_path, blank_database.url, **{"prefcenter.secret": None})
    assert run(capsys, "-c", ini, "migrate")[0] == 0


def test_downgrade_to_base_drops_the_schema(capsys, migrated_ini, blank_database):
    code, out, _ = run(capsys, "-c", migrated_ini, "downgrade", "--revision", "base")
    assert code == 0
    assert "is at revision base" in out
    assert table_names(blank_database.url) <= {"alembic_version"}


def test_an_unknown_revision_is_named(capsys, ini):
    code, _, err = run(capsys, "-c", ini, "migrate", "--revision", "9999")
    assert code == 2
    assert "--revision: '9999'" in err


def test_an_unreachable_database_is_reported_without_a_traceback(capsys, tmp_path):
    ini = write_ini(tmp_path, "postgresql+psycopg://nobody:secret-pw@127.0.0.1:1/none")
    code, _, err = run(capsys, "-c", ini, "migrate")
    assert code == 1
    assert err.startswith("prefcenter migrate: the database cannot be used: ")
    assert "127.0.0.1" in err
    assert "secret-pw" not in err
    assert "Traceback" not in err


def test_downgrade_requires_a_revision(capsys, migrated_ini):
    with pytest.raises(SystemExit) as exited:
        cli.main(["-c", migrated_ini, "downgrade"])
    assert exited.value.code == 2
    assert "--revision" in capsys.readouterr().err


def test_check_migrations_passes_on_a_database_at_head(capsys, migrated_ini):
    code, out, _ = run(capsys, "-c", migrated_ini, "check-migrations")
    assert code == 0
    assert "the models match the migrations" in out


def test_check_migrations_names_a_difference(capsys, migrated_ini, blank_database):
    engine = make_engine(blank_database.url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE stray_table (id INTEGER PRIMARY KEY)")
    engine.dispose()
    code, _, err = run(capsys, "-c", migrated_ini, "check-migrations")
    assert code == 1
    assert "the models and the migrations differ" in err
    assert "stray_table" in err


def test_check_migrations_on_an_empty_database_says_to_migrate(capsys, ini):
    code, _, err = run(capsys, "-c", ini, "check-migrations")
    assert code == 1
    assert "run `prefcenter migrate` first" in err


# -- demo data --------------------------------------------------------------------------


def test_seed_demo_fills_the_database_and_prints_the_log_ins(capsys, migrated_ini, blank_database):
    code, out, _ = run(capsys, "-c", migrated_ini, "seed-demo")
    assert code == 0
    assert re.search(r"customers\s+2400 in the database \(\+2400\)", out)
    assert "demo@example.com / demo-password" in out
    assert "admin@example.com / admin-password" in out
    assert DEMO_API_KEY in out

    code, out, _ = run(capsys, "-c", migrated_ini, "seed-demo")
    assert code == 0
    assert "0 rows added" in out and "(already seeded)" in out
    assert query(blank_database.url, lambda s: authenticate(s, "demo@example.com", "demo-password"))


def test_seed_demo_refuses_unless_the_configuration_is_a_demo(capsys, blank_database, tmp_path):
    ini = write_ini(tmp_path, blank_database.url, **{"prefcenter.demo": "false"})
    assert run(capsys, "-c", ini, "migrate")[0] == 0
    code, _, err = run(capsys, "-c", ini, "seed-demo")
    assert code == 2
    assert "prefcenter.demo is not true" in err
    assert query(blank_database.url, lambda s: s.scalar(sa.select(sa.func.count(User.id)))) == 0


def test_seed_demo_on_an_empty_database_says_to_migrate(capsys, ini):
    code, _, err = run(capsys, "-c", ini, "seed-demo")
    assert code == 1
    assert "is at revision none (empty)" in err
    assert "run `prefcenter migrate` first" in err


# -- users --------------------------------------------------------------------------------


def test_create_user_reads_the_password_from_stdin(
    capsys, monkeypatch, migrated_ini, blank_database
):
    monkeypatch.setattr(sys, "stdin", io.StringIO("a long password\n"))
    code, out, _ = run(
        capsys,
        *("-c", migrated_ini, "create-user", "--email", "Ana@Example.com"),
        *("--role", "marketer", "--password-stdin"),
    )
    assert code == 0
    assert out.startswith("created marketer ana@example.com (id ")
    user = query(
        blank_database.url, lambda s: authenticate(s, "ana@example.com", "a long password")
    )
    assert user is not None and user.role == "marketer"


def test_create_user_asks_for_the_password_twice(capsys, monkeypatch, migrated_ini, blank_database):
    answers = iter(["first password", "other password"])
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt: next(answers))
    code, _, err = run(
        capsys, "-c", migrated_ini, "create-user", "--email", "x@example.com", "--role", "admin"
    )
    assert code == 2
    assert "the two passwords differ; nothing was created" in err
    assert query(blank_database.url, lambda s: s.scalar(sa.select(sa.func.count(User.id)))) == 0


def test_create_user_explains_invalid_input(capsys, monkeypatch, migrated_ini):
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    code, out, err = run(
        capsys,
        *("-c", migrated_ini, "create-user", "--email", "not-an-email"),
        *("--role", "viewer", "--password-stdin"),
    )
    assert code == 2
    assert "error: email: 'not-an-email' is not an e-mail address" in err
    assert "error: password: '(hidden)' is too short: at least 10 characters, got 5" in err
    assert "short" not in err.replace("too short", "")
    assert out == ""


def test_create_user_refuses_an_unknown_role(capsys, migrated_ini):
    with pytest.raises(SystemExit) as exited:
        cli.main(["-c", migrated_ini, "create-user", "--email", "a@example.com", "--role", "boss"])
    assert exited.value.code == 2
    assert "invalid choice: 'boss'" in capsys.readouterr().err


# -- API keys -------------------------------------------------------------------------------


def test_create_api_key_prints_the_key_once_with_a_warning(capsys, migrated_ini, blank_database):
    code, out, err = run(
        capsys,
        *("-c", migrated_ini, "create-api-key", "--name", "Loyalty"),
        *("--scopes", "customers:read,preferences:write", "--scopes", "gdpr"),
    )
    assert code == 0
    plaintext = out.strip()
    assert re.fullmatch(r"pc_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", plaintext)
    assert "cannot be shown again" in err
    assert plaintext not in err
    api_key = query(blank_database.url, lambda s: find_api_key(s, plaintext))
    assert api_key.scopes == ["customers:read", "preferences:write", "gdpr"]


def test_create_api_key_names_an_unknown_scope(capsys, migrated_ini, blank_database):
    code, out, err = run(
        capsys, "-c", migrated_ini, "create-api-key", "--name", "k", "--scopes", "gdpr,everything"
    )
    assert code == 2
    assert "error: scopes: 'everything' is not an API scope (valid scopes: customers:read" in err
    assert out == ""
    assert query(blank_database.url, lambda s: s.scalar(sa.select(sa.func.count(ApiKey.id)))) == 0


def test_revoke_api_key(capsys, migrated_ini, blank_database):
    _, plaintext, _ = run(
        capsys, "-c", migrated_ini, "create-api-key", "--name", "k", "--scopes", "gdpr"
    )
    prefix = plaintext.strip()[3:11]
    code, out, _ = run(capsys, "-c", migrated_ini, "revoke-api-key", "--prefix", f"pc_{prefix}")
    assert code == 0
    assert f"revoked API key 'k' (prefix {prefix})" in out
    assert query(blank_database.url, lambda s: find_api_key(s, plaintext.strip())) is None

    code, _, err = run(capsys, "-c", migrated_ini, "revoke-api-key", "--prefix", "00000000")
    assert code == 2
    assert "'00000000' is not the prefix of any API key" in err


# -- workers on the stub broker ---------------------------------------------------------


def test_worker_and_ping_worker_explain_that_the_stub_broker_has_no_workers(capsys, migrated_ini):
    code, _, err = run(capsys, "-c", migrated_ini, "worker")
    assert code == 2
    assert "the stub broker lives inside the web process" in err
    code, _, err = run(capsys, "-c", migrated_ini, "ping-worker")
    assert code == 1
    assert "no separate worker to ping" in err
    assert "BROKER_URL" in err


def test_worker_names_a_broker_it_cannot_reach(capsys, blank_database, tmp_path):
    ini = write_ini(
        tmp_path,
        blank_database.url,
        **{"dramatiq.broker_url": "redis://:hunter2-password@127.0.0.1:1/0"},
    )
    code, _, err = run(capsys, "-c", ini, "worker")
    assert code == 1
    assert "cannot reach redis://:***@127.0.0.1:1/0" in err
    assert "hunter2" not in err


# -- serve -------------------------------------------------------------------------------


def test_served_urls_list_the_entry_points_that_exist():
    with Configurator() as config:
        config.add_route("home", "/")
        config.add_route("admin_home", "/admin/")
    app = config.make_wsgi_app()
    assert cli.served_urls(app, "0.0.0.0", 8080) == [
        ("home page", "http://localhost:8080/"),
        ("health check", "http://localhost:8080/healthz"),
        ("back office", "http://localhost:8080/admin"),
    ]


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("localhost:6543", ("localhost", 6543)), ("[::1]:80", ("::1", 80)), ("*:8080", ("*", 8080))],
)
def test_split_listen(listen, expected):
    assert cli.split_listen(listen) == expected


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_prints_its_urls_serves_and_stops_on_sigterm(tmp_path):
    if sys.platform == "win32":  # pragma: no cover
        pytest.skip("SIGTERM")
    url = f"sqlite:///{tmp_path / 'serve.sqlite'}"
    ini = write_ini(tmp_path, url, **{"prefcenter.worker.in_process": "true"})
    assert script("-c", ini, "migrate").returncode == 0
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
    server = subprocess.Popen(
        [SCRIPT, "-c", ini, "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        banner = [server.stdout.readline() for _ in range(7)]
        assert f"http://127.0.0.1:{port}/healthz" in "".join(banner)
        assert "demo@example.com / demo-password" in "".join(banner)
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    body = r.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert '"status": "ok"' in body
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=10)
        finally:
            server.kill()
            server.stdout.close()
            server.stderr.close()
    assert code == 0


# -- the installed console script -----------------------------------------------------------


def test_the_console_script_runs_help_migrate_and_seed_demo(tmp_path):
    result = script("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout

    url = f"sqlite:///{tmp_path / 'script.sqlite'}"
    ini = write_ini(tmp_path, url)
    result = script("-c", ini, "migrate")
    assert result.returncode == 0, result.stderr
    assert "is at revision" in result.stdout

    result = script("-c", ini, "seed-demo")
    assert result.returncode == 0, result.stderr
    assert "customers" in result.stdout and DEMO_API_KEY in result.stdout

    result = script(
        "-c", ini, "create-user", "--email", "b@example.com", "--role", "viewer",
        "--password-stdin", input="another long password\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "created viewer b@example.com" in result.stdout


def test_the_console_script_reads_database_url_from_the_environment(tmp_path):
    url = f"sqlite:///{tmp_path / 'from-env.sqlite'}"
    ini = write_ini(tmp_path, "sqlite:///unused-by-this-test.sqlite")
    env = {**{k: v for k, v in os.environ.items() if k not in OVERRIDES}, "DATABASE_URL": url}
    result = subprocess.run(
        [SCRIPT, "-c", ini, "migrate"], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "customers" in table_names(url)


def test_serve_puts_the_start_up_objects_out_of_the_collector_s_reach(tmp_path, monkeypatch):
    import gc

    import waitress

    url = f"sqlite:///{tmp_path / 'serve.sqlite'}"
    ini = write_ini(tmp_path, url)
    assert script("-c", ini, "migrate").returncode == 0
    for name in OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    seen: dict[str, int] = {}

    def fake_serve(app, **options):  # instead of listening: what the process is left with
        seen["frozen"] = gc.get_freeze_count()
        seen["tracked"] = len(gc.get_objects())

    monkeypatch.setattr(waitress, "serve", fake_serve)
    gc.unfreeze()
    try:
        cli.serve(ini, port=_free_port())
    finally:
        gc.unfreeze()  # this test process goes on collecting as before
    assert seen["frozen"] > 50_000  # the app and what its start-up loaded
    assert seen["tracked"] < seen["frozen"] // 10  # what a full collection still scans
