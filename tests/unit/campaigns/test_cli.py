"""`prefcenter campaign …`: create from a file, forecast, launch, pause, status; clear errors."""

from __future__ import annotations

import json
import re

import pytest

from campaigns import cli as campaign_cli
from campaigns import dispatch
from campaigns import tasks as campaign_tasks
from prefcenter import cli
from prefcenter.cli import load_settings
from prefcenter.db import make_engine, make_session_factory, task_session
from prefcenter.models import utcnow
from tests.conftest import create_test_database
from tests.unit.prefcenter.test_cli import write_ini

SPEC = {
    "name": "Winter sale",
    "topic": "offers_fashion",
    "channels": ["email", "sms"],
    "segment": {"all": []},
    "content": {
        "email": {"fr": {"subject": "Soldes", "text": "Bonjour {{ first_name }}"}},
        "sms": {"fr": {"text": "Soldes !"}},
    },
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def seeded_ini(request, tmp_path_factory):
    """One seeded database per backend for this module (seeding takes seconds)."""
    db = create_test_database(request.param, tmp_path_factory)
    ini = write_ini(tmp_path_factory.mktemp("ini"), db.url)
    assert cli.main(["-c", ini, "migrate"]) == 0
    assert cli.main(["-c", ini, "seed-demo"]) == 0
    yield ini
    db.drop()


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_create_forecast_launch_pause_and_status(seeded_ini, tmp_path, capsys):
    spec = tmp_path / "winter.json"
    spec.write_text(json.dumps(SPEC))

    code, out, _ = run(capsys, "-c", seeded_ini, "campaign", "create", str(spec))
    assert code == 0
    campaign_id = out.strip()
    code, out, _ = run(capsys, "-c", seeded_ini, "campaign", "forecast", campaign_id)
    forecast = json.loads(out)
    code, out, _ = run(capsys, "-c", seeded_ini, "campaign", "launch", campaign_id)

    assert code == 0
    assert f"campaign {campaign_id} 'Winter sale': running" in out
    planned = sum(
        int(line.split()[1])
        for line in out.splitlines()
        if line.split()[0] in ("planned", "deferred")
    )
    assert planned == forecast["contacted"] > 0
    assert forecast["audience"] == forecast["contacted"] + sum(forecast["skipped"].values())

    assert run(capsys, "-c", seeded_ini, "campaign", "pause", campaign_id)[0] == 0
    code, out, _ = run(capsys, "-c", seeded_ini, "campaign", "status", campaign_id)
    assert ": paused" in out.splitlines()[0]
    code, _, err = run(capsys, "-c", seeded_ini, "campaign", "launch", campaign_id)
    assert code == 1
    assert "cannot launch a campaign that is paused" in err


def test_a_bad_file_names_each_field_and_creates_nothing(seeded_ini, tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: ''\ntopic: nope\nchannels: [fax]\n")

    code, out, err = run(capsys, "-c", seeded_ini, "campaign", "create", str(spec))

    assert code == 2
    text = out + err
    assert "/topic: 'nope' is not an active topic" in text
    assert "/channels" in text and "/name" in text


def test_an_unknown_campaign_is_named(seeded_ini, capsys):
    code, _, err = run(capsys, "-c", seeded_ini, "campaign", "status", "not-an-id")
    assert code == 1
    assert "no campaign 'not-an-id'" in err


def test_the_scheduler_refuses_the_stub_broker(seeded_ini, capsys):
    code, _, err = run(capsys, "-c", seeded_ini, "scheduler", "--once")
    assert code == 2
    assert "stub" in err


def test_preview_call_list_and_print_file(seeded_ini, tmp_path, capsys):
    spec = tmp_path / "winter.json"
    spec.write_text(json.dumps(SPEC))
    campaign_id = run(capsys, "-c", seeded_ini, "campaign", "create", str(spec))[1].strip()

    code, out, _ = run(
        capsys, "-c", seeded_ini, "campaign", "preview", campaign_id, "--external-id", "DEMO-000001"
    )
    assert code == 0
    assert "Subject: Soldes" in out and "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in out
    code, _, err = run(
        capsys, "-c", seeded_ini, "campaign", "preview", campaign_id, "--external-id", "NOPE"
    )
    assert (code, err.strip()) == (1, "prefcenter campaign: no customer with external id 'NOPE'")

    output = tmp_path / "calls.json"
    code, _, _ = run(
        capsys,
        "-c",
        seeded_ini,
        "campaign",
        "call-list",
        "--day",
        "2026-12-01",
        "--format",
        "json",
        "--output",
        str(output),
    )
    assert code == 0 and isinstance(json.loads(output.read_text()), list)
    code, out, _ = run(capsys, "-c", seeded_ini, "campaign", "print-file", campaign_id)
    assert out.splitlines()[0] == "external_id,name,line1,line2,postal_code,city,country,text"


def test_progress_counts_what_is_done_out_of_what_is_to_send():
    counts = {"planned": 3, "queued": 1, "sent": 4, "delivered": 1, "failed": 1, "deferred": 2}
    progress = campaign_cli.Progress.of(counts)

    assert (progress.done, progress.waiting, progress.deferred, progress.total) == (6, 4, 2, 12)
    assert progress.sending
    assert progress.bar(width=12) == (
        "  [######------]  50%  6 of 12 done (1 failed), 2 wait for their contact window"
    )
    finished = campaign_cli.Progress.of({"sent": 5, "deferred": 2})
    assert not finished.sending
    assert finished.bar(width=4).startswith("  [##--]  71%  5 of 7 done")


def test_status_watch_redraws_until_everything_is_sent(seeded_ini, tmp_path, capsys, monkeypatch):
    spec = tmp_path / "watch.json"
    spec.write_text(json.dumps({**SPEC, "channels": ["email"]}))
    campaign_id = run(capsys, "-c", seeded_ini, "campaign", "create", str(spec))[1].strip()
    assert run(capsys, "-c", seeded_ini, "campaign", "launch", campaign_id)[0] == 0
    settings = load_settings(seeded_ini)
    passes: list[int] = []

    def worker_sends_everything(seconds: float) -> None:
        # Between two refreshes the worker queues and sends what is due, as it would.
        passes.append(1)
        assert len(passes) < 3, "the watch should have stopped once everything was sent"
        engine = make_engine(settings["sqlalchemy.url"])
        with task_session(make_session_factory(engine)) as session:
            now = utcnow()
            ids = dispatch.queue_due(session, now, limit=10_000)
            dispatch.send_deliveries(session, ids, now, campaign_tasks.build_dispatcher(settings))
        engine.dispose()

    monkeypatch.setattr(campaign_cli.time, "sleep", worker_sends_everything)
    code, out, _ = run(
        capsys, "-c", seeded_ini, "campaign", "status", campaign_id, "--watch", "--interval", "0"
    )

    assert code == 0 and len(passes) == 1
    bars = [line for line in out.splitlines() if line.startswith("  [")]
    first, last = (re.search(r"(\d+) of (\d+) done", bar).groups() for bar in (bars[0], bars[-1]))
    assert first[0] == "0" and first[1] == last[1]
    deferred = re.search(r", (\d+) wait for their contact window", bars[-1])
    # Everything due now went out; only those outside their contact hours are left.
    assert int(last[0]) + int(deferred.group(1) if deferred else 0) == int(last[1])
    assert [bar.endswith("(running)") for bar in bars] == [False, True, True]
