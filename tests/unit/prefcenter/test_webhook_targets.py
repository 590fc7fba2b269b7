"""Outbound webhooks never reach private addresses (server-side request forgery)."""

from __future__ import annotations

import pytest

from prefcenter.errors import InvalidInput
from prefcenter.services import webhooks
from tests.fakes.webhook_receiver import webhook_receiver


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://hooks.example.com/x", "must use https"),
        ("ftp://hooks.example.com/x", "must be an https URL"),
        ("https:///x", "has no host name"),
        ("https://user:pw@hooks.example.com/x", "must not carry a user name"),
        ("https://127.0.0.1/x", "private, loopback or reserved"),
        ("https://10.1.2.3/x", "private, loopback or reserved"),
        ("https://192.168.0.10:8443/x", "private, loopback or reserved"),
        ("https://169.254.169.254/latest/meta-data", "private, loopback or reserved"),
        ("https://0.0.0.0/x", "private, loopback or reserved"),
        ("https://[::1]/x", "private, loopback or reserved"),
        ("https://[::ffff:127.0.0.1]/x", "private, loopback or reserved"),
        ("https://[fd00::1]/x", "private, loopback or reserved"),
        ("https://224.0.0.1/x", "private, loopback or reserved"),
        ("https://localhost/x", "local host name"),
        ("https://LOCALHOST./x", "local host name"),
        ("https://api.localhost/x", "local host name"),
        ("https://db.internal/x", "local host name"),
        ("https://redis/x", "local host name"),
    ],
)
def test_private_and_non_https_targets_are_refused(url, reason):
    with pytest.raises(InvalidInput) as refused:
        webhooks.check_url(url)
    (error,) = refused.value.errors
    assert (error.field, error.value) == ("/url", url)
    assert reason in error.reason


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com/prefcenter", "https://93.184.215.14:8443/x"]
)
def test_public_https_targets_are_accepted(url):
    webhooks.check_url(url)


def test_development_may_register_a_receiver_on_localhost():
    webhooks.check_url("http://127.0.0.1:8000/hooks", allow_private=True)
    with pytest.raises(InvalidInput, match="must be an https URL"):
        webhooks.check_url("file:///etc/passwd", allow_private=True)


def test_at_send_time_the_connected_address_is_checked_again():
    # A public-looking name may resolve to a private address: the peer is what counts.
    with webhook_receiver() as receiver:
        code, error = webhooks.post(receiver.url, b"{}", {"Content-Type": "application/json"})
    assert code is None
    assert error.startswith("refused: 127.0.0.1 resolves to 127.0.0.1")
    assert receiver.received == []


def test_redirects_are_not_followed():
    with webhook_receiver() as inside:
        with webhook_receiver(statuses=[302], location=inside.url) as outside:
            code, error = webhooks.post(
                outside.url, b"{}", {"Content-Type": "application/json"}, allow_private=True
            )
        assert (code, error) == (302, "HTTP 302")
        assert len(outside.received) == 1
    assert inside.received == []
