"""Signature checks against SendGrid's own published test vector (sendgrid-python's tests)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from campaigns import events

# The vector published with the sendgrid library's event webhook tests: a real SendGrid
# verification key, and a batch it signed (note the trailing CRLF, part of the body).
PUBLIC_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw"
    "+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
)
SIGNATURE = (
    "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluL"
    "tEZtM="
)
TIMESTAMP = "1600112502"
BODY = (
    json.dumps(
        [
            {
                "email": "hello@world.com",
                "event": "dropped",
                "reason": "Bounced Address",
                "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
                "sg_message_id": "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-"
                "5F5FC76C-9.0",
                "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>",
                "timestamp": 1600112492,
            }
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    + "\r\n"
).encode()
SIGNED_AT = dt.datetime.fromtimestamp(int(TIMESTAMP), dt.UTC)
SETTINGS = events.WebhookSettings(PUBLIC_KEY)


def test_sendgrid_s_own_signed_batch_verifies_and_is_a_hard_failure():
    events.verify(SETTINGS, BODY, SIGNATURE, TIMESTAMP, SIGNED_AT + dt.timedelta(seconds=30))

    (event,) = events.parse(BODY)
    assert events._is_hard_failure(event)


@pytest.mark.parametrize(
    ("body", "signature", "timestamp", "now", "why"),
    [
        (BODY.replace(b"dropped", b"delivrd"), SIGNATURE, TIMESTAMP, SIGNED_AT, "does not match"),
        (BODY, SIGNATURE, "1600112503", SIGNED_AT, "does not match"),
        (BODY, "not base64!", TIMESTAMP, SIGNED_AT, "does not match"),
        (BODY, SIGNATURE, "yesterday", SIGNED_AT, "is not a Unix time"),
        (BODY, None, TIMESTAMP, SIGNED_AT, "headers are missing"),
        (BODY, SIGNATURE, TIMESTAMP, SIGNED_AT + dt.timedelta(hours=1), "outside the accepted"),
    ],
)
def test_anything_else_is_rejected_with_the_reason(body, signature, timestamp, now, why):
    with pytest.raises(events.Rejected, match=why):
        events.verify(SETTINGS, body, signature, timestamp, now)


def test_without_a_configured_key_every_request_is_rejected():
    with pytest.raises(events.Rejected, match="no verification key"):
        events.verify(events.WebhookSettings(None), BODY, SIGNATURE, TIMESTAMP, SIGNED_AT)


def test_another_key_does_not_verify_sendgrid_s_signature():
    other = events.WebhookSettings(
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REn"
        "tlo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA=="
    )
    with pytest.raises(events.Rejected, match="does not match"):
        events.verify(other, BODY, SIGNATURE, TIMESTAMP, SIGNED_AT)
