"""`prefcenter campaign …`: create from a file, forecast, launch, pause, status; clear errors."""

from __future__ import annotations

import json

import pytest

from prefcenter import cli
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
