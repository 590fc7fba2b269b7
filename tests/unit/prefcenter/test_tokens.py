import base64
import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefcenter.tokens import BadToken, TokenExpired, TokenInvalid, sign, verify

SECRET = "token-test-secret-" + "s" * 32
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(hours=1)


def _token(payload=None, purpose="confirm", expires_at=LATER):
    return sign(SECRET, purpose, payload or {"customer": "c-1", "n": 7}, expires_at)


def _token_body(token):
    body = token.split(".")[0]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


def test_a_token_round_trips_its_payload_and_is_url_safe():
    token = _token({"customer": "c-1", "channel": "email", "accents": "Élodie"})

    assert verify(SECRET, "confirm", token, now=NOW) == {
        "customer": "c-1",
        "channel": "email",
        "accents": "Élodie",
    }
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert token.count(".") == 1


def test_a_token_is_refused_after_its_expiry_and_accepted_just_before():
    token = _token(expires_at=LATER)

    assert verify(SECRET, "confirm", token, now=LATER - dt.timedelta(seconds=1))
    with pytest.raises(TokenExpired):
        verify(SECRET, "confirm", token, now=LATER)
    with pytest.raises(BadToken):
        verify(SECRET, "confirm", token, now=LATER + dt.timedelta(days=3))


def test_a_token_for_one_purpose_is_refused_for_another():
    token = _token(purpose="double_opt_in")

    with pytest.raises(TokenInvalid):
        verify(SECRET, "portal", token, now=NOW)


def test_a_token_signed_with_another_secret_is_refused():
    token = sign("another-secret-" + "o" * 32, "confirm", {"customer": "c-1"}, LATER)

    with pytest.raises(TokenInvalid):
        verify(SECRET, "confirm", token, now=NOW)


def test_a_tampered_payload_is_refused():
    body, signature = _token({"customer": "c-1"}).split(".")
    content = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    content["data"]["customer"] = "c-2"
    forged = base64.urlsafe_b64encode(json.dumps(content).encode()).rstrip(b"=").decode()

    with pytest.raises(TokenInvalid):
        verify(SECRET, "confirm", f"{forged}.{signature}", now=NOW)


def test_extending_the_expiry_by_editing_the_body_is_refused():
    token = _token(expires_at=NOW + dt.timedelta(seconds=10))
    body, signature = token.split(".")
    content = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    content["exp"] += 86_400
    forged = base64.urlsafe_b64encode(json.dumps(content).encode()).rstrip(b"=").decode()

    with pytest.raises(TokenInvalid):
        verify(SECRET, "confirm", f"{forged}.{signature}", now=NOW + dt.timedelta(minutes=1))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # signature changed
        lambda t: t.replace(".", ""),  # no separator
        lambda t: t + ".extra",  # three parts
        lambda t: "",
        lambda t: t.split(".")[0] + ".",  # empty signature
        lambda t: "!!!." + t.split(".")[1],  # not base64url
    ],
    ids=["signature", "no-dot", "three-parts", "empty", "empty-signature", "bad-alphabet"],
)
def test_a_malformed_or_altered_token_is_invalid_not_an_unexpected_error(mangle):
    with pytest.raises(TokenInvalid):
        verify(SECRET, "confirm", mangle(_token()), now=NOW)


def test_signing_refuses_a_naive_expiry():
    with pytest.raises(ValueError, match="timezone-aware"):
        sign(SECRET, "confirm", {}, dt.datetime(2026, 3, 1, 13, 0))


_payloads = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(payload=st.dictionaries(st.text(), _payloads, max_size=5))
def test_a_token_body_is_the_sorted_compact_json_of_its_payload(payload):
    # Tokens already sent stay valid only if the body is written byte for byte as before.
    expected = json.dumps(
        {"exp": int(LATER.timestamp()), "data": payload}, separators=(",", ":"), sort_keys=True
    )
    body = _token_body(sign(SECRET, "confirm", payload, LATER))

    assert body == expected
    assert verify(SECRET, "confirm", sign(SECRET, "confirm", payload, LATER), now=NOW) == payload
