"""Schemathesis against the served document: for every operation, generated requests
(valid and invalid) never get a 5xx and every answer conforms to openapi.yaml."""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from schemathesis.specs.openapi.checks import positive_data_acceptance

from prefcenter import make_wsgi_app
from prefcenter.db import DBBIND_KEY
from prefcenter.models.vocabulary import API_SCOPES
from tests.conftest import app_settings
from tests.factories import make_api_key, make_customer, make_topic

EXAMPLES = 10
# Schema-valid data may still be refused on meaning (an unknown topic, a time zone that
# does not exist, a cursor we never issued): 4xx there is right, so that check is off.
EXCLUDED = [positive_data_acceptance]


@pytest.fixture
def served(connection, broker, dbsession):
    app = make_wsgi_app(
        app_settings(
            **{
                DBBIND_KEY: connection,
                "prefcenter.broker": broker,
                "prefcenter.api.burst": "1000000",
                "prefcenter.api.rate_per_second": "1000000",
            }
        )
    )
    _key, plaintext = make_api_key(dbsession, scopes=API_SCOPES)
    make_customer(dbsession, external_id="SCHEMA-1")
    make_topic(dbsession, key="offers", kind="marketing")
    make_topic(dbsession, key="alerts", kind="alert", regime="opt_out")
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.yaml", app)
    return schema, {"Authorization": f"Bearer {plaintext}"}


def test_no_server_errors_and_every_response_conforms(served) -> None:
    schema, headers = served
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 28  # 17 of the preference center, 11 of the campaign engine
    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def check(case) -> None:
            case.call_and_validate(headers=headers, excluded_checks=EXCLUDED)

        check()
