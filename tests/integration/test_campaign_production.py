"""Production-like: PostgreSQL, Redis as the broker, `prefcenter scheduler` and a separate
`prefcenter worker` process, email through the real `sendgrid` client to the fake server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from campaigns import services
from campaigns.models import Delivery
from prefcenter.consent_settings import ConsentSettings
from prefcenter.db import make_engine
from prefcenter.models import utcnow
from tests.conftest import TEST_SECRET
from tests.factories import make_topic
from tests.fakes.sendgrid import fake_sendgrid
from tests.integration.test_worker import (  # the same services and process helpers
    OVERRIDES,
    postgres,  # noqa: F401  (fixture)
    redis_url,  # noqa: F401  (fixture)
    stop_worker,
    write_ini,
)
from tests.policy_builders import KEY, reachable_customer

SCRIPT = str(Path(sys.executable).with_name("prefcenter"))
SENDGRID_KEY = "SG.production-like-test"


def write_production_ini(directory: Path, sendgrid_host: str) -> str:
    path = Path(write_ini(directory))
    text = path.read_text().replace(
        "[app:main]\nuse = egg:prefcenter\n",
        "[app:main]\nuse = egg:prefcenter\n"
        "prefcenter.env = production\n"
        f"prefcenter.address_hmac_key = {KEY.decode()}\n"
        "prefcenter.email.transport = sendgrid\n"
        "prefcenter.email.from = Maison <bonjour@example.com>\n"
        f"sendgrid.host = {sendgrid_host}\n"
        "prefcenter.public_url = https://prefs.example.com\n",
    )
    path.write_text(text)
    return str(path)


@pytest.mark.integration
def test_a_campaign_goes_out_through_redis_a_worker_process_and_sendgrid(
    postgres,  # noqa: F811
    redis_url,  # noqa: F811
    tmp_path,
):
    engine = make_engine(postgres)
    with Session(engine) as session:
        topic = make_topic(session, key="prod_offers")
        people = [reachable_customer(session, topic) for _ in range(25)]
        campaign = services.create_campaign(
            session,
            {
                "name": "Production-like",
                "topic": "prod_offers",
                "channels": ["email"],
                "segment": {"subscribed": "prod_offers"},
                "content": {"email": {"fr": {"subject": "Soldes", "text": "Bonjour"}}},
            },
        )
        cfg = ConsentSettings(address_key=KEY)
        services.launch(session, campaign, utcnow(), services.Settings(cfg))
        session.commit()
        campaign_id = campaign.id

    with fake_sendgrid(api_key=SENDGRID_KEY) as fake:
        ini = write_production_ini(tmp_path, fake.url)
        env = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
        env |= {
            "DATABASE_URL": postgres,
            "BROKER_URL": redis_url,
            "PREFCENTER_SECRET": TEST_SECRET,
            "SENDGRID_API_KEY": SENDGRID_KEY,
        }
        worker = subprocess.Popen(
            [SCRIPT, "-c", ini, "worker", "--queues", "campaigns", "--threads", "2"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            scheduler = subprocess.run(
                [SCRIPT, "-c", ini, "scheduler", "--once"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert scheduler.returncode == 0, scheduler.stderr
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with Session(engine) as session:
                    sent = session.scalar(
                        sa.select(sa.func.count()).where(
                            Delivery.campaign_id == campaign_id, Delivery.status == "sent"
                        )
                    )
                if sent == len(people):
                    break
                time.sleep(0.2)
        finally:
            code, _took, log = stop_worker(worker)
        engine.dispose()

    assert sent == len(people), log
    assert code == 0, log
    delivered = {p["custom_args"]["delivery_id"] for p in fake.personalizations()}
    assert len(delivered) == len(people) == len(fake.personalizations())
    assert all(call.headers["Authorization"] == f"Bearer {SENDGRID_KEY}" for call in fake.calls)
