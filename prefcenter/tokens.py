"""Signed, expiring, purpose-bound tokens for links we send (double opt-in, portal, unsubscribe).

A token is ``base64url(JSON body) + "." + base64url(HMAC-SHA256)``, unpadded, so it fits in
a URL without escaping. The MAC covers the purpose as well as the body: a token minted for
one purpose (say, confirming an address) is refused for another (say, opening the portal).
The body is readable by whoever holds the token; put nothing secret in the payload.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import hmac
import json
from typing import Any

from .addresses import derive_key


class BadToken(Exception):
    """The token cannot be used; callers that do not care why catch this."""


class TokenInvalid(BadToken):
    """Malformed, tampered with, signed with another secret or for another purpose."""


class TokenExpired(BadToken):
    """Genuine, but past its expiry time."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    # Only the URL-safe alphabet; b64decode would otherwise silently skip stray characters.
    if not text or text.strip("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"):
        raise TokenInvalid("token is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenInvalid("token is not base64url") from None


@functools.lru_cache(maxsize=32)
def _keyed_for(secret: str, purpose: str) -> hmac.HMAC:
    """An HMAC already keyed for ``secret`` and fed ``purpose``, to copy for each token
    (dispatch signs two links per message: deriving the key and padding it each time
    cost a sixth of a worker's CPU). A key of its own, so a token MAC can never be
    replayed as another HMAC made from the secret; the NUL separator keeps (purpose,
    body) pairs unambiguous."""
    mac = hmac.new(derive_key(secret, "signed-token"), digestmod=hashlib.sha256)
    mac.update(purpose.encode() + b"\x00")
    return mac


def _mac(secret: str, purpose: str, body: bytes) -> bytes:
    mac = _keyed_for(secret, purpose).copy()
    mac.update(body)
    return mac.digest()


_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True)
_quote = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def _body(payload: Any, exp: int) -> str:
    """``json.dumps({"exp": exp, "data": payload}, separators=(",", ":"), sort_keys=True)``,
    the same text, without building an encoder for each token (which cost more than
    signing it): a flat payload of strings, integers and None, as links carry, is
    written here directly."""
    if type(payload) is dict:
        items = []
        for key in sorted(payload):
            value = payload[key]
            kind = type(value)
            if type(key) is not str:
                break
            if kind is str:
                items.append(f"{_quote(key)}:{_quote(value)}")
            elif value is None:
                items.append(f"{_quote(key)}:null")
            elif kind is int:
                items.append(f"{_quote(key)}:{value}")
            else:
                break
        else:
            return f'{{"data":{{{",".join(items)}}},"exp":{exp}}}'
    return _JSON.encode({"exp": exp, "data": payload})


def _check_purpose(purpose: str) -> None:
    if not purpose or "\x00" in purpose:
        raise ValueError(f"token purpose {purpose!r} must be a non-empty string without NUL")


def sign(secret: str, purpose: str, payload: dict[str, Any], expires_at: dt.datetime) -> str:
    """A token carrying ``payload`` (JSON-serializable) until ``expires_at`` (timezone-aware)."""
    _check_purpose(purpose)
    if expires_at.tzinfo is None:
        raise ValueError(f"naive datetime {expires_at!r}: expiry must be timezone-aware")
    body = _body(payload, int(expires_at.timestamp())).encode()
    return f"{_b64encode(body)}.{_b64encode(_mac(secret, purpose, body))}"


def verify(secret: str, purpose: str, token: str, *, now: dt.datetime) -> dict[str, Any]:
    """The payload of a genuine, unexpired token for ``purpose``; else TokenInvalid/TokenExpired."""
    _check_purpose(purpose)
    parts = (token or "").split(".")
    if len(parts) != 2:
        raise TokenInvalid("token is not of the form body.signature")
    body, signature = _b64decode(parts[0]), _b64decode(parts[1])
    if not hmac.compare_digest(signature, _mac(secret, purpose, body)):
        raise TokenInvalid("token signature does not match")
    # Signed by us, so the body is well-formed; expiry is checked only on genuine tokens.
    content = json.loads(body)
    if now.timestamp() >= content["exp"]:
        raise TokenExpired("token has expired")
    payload: dict[str, Any] = content["data"]
    return payload
