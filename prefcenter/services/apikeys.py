"""API keys for the loyalty REST API: ``pc_<prefix>_<secret>``, only a SHA-256 is stored."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
import uuid
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..errors import InvalidField, InvalidInput, NotFound
from ..models import ApiKey, utcnow
from ..models.vocabulary import API_SCOPES

KEY_PREFIX = "pc_"
MAX_NAME_LENGTH = 100
# pc_ + 8-character prefix + _ + secrets.token_urlsafe(32) (43 characters).
_KEY = re.compile(r"^pc_([A-Za-z0-9]{8})_([A-Za-z0-9_-]{43})$")


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def prefix_of(plaintext: str) -> str | None:
    """The 8-character prefix of a well-formed key, else None."""
    match = _KEY.match(plaintext)
    return match.group(1) if match else None


def create_api_key(session: Session, name: str, scopes: Iterable[str]) -> tuple[ApiKey, str]:
    """Create a key; return it with its plaintext, which is never stored nor shown again."""
    while True:
        prefix = secrets.token_hex(4)
        if session.scalar(sa.select(ApiKey.id).where(ApiKey.prefix == prefix)) is None:
            break
    plaintext = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return register_api_key(session, name, scopes, plaintext), plaintext


def register_api_key(session: Session, name: str, scopes: Iterable[str], plaintext: str) -> ApiKey:
    """Store a key whose plaintext the caller chose (the demo data set's fixed key)."""
    name = name.strip()
    scopes = list(dict.fromkeys(scope.strip() for scope in scopes if scope.strip()))
    errors: list[InvalidField] = []
    if not name or len(name) > MAX_NAME_LENGTH:
        errors.append(InvalidField("name", name, f"must be 1 to {MAX_NAME_LENGTH} characters long"))
    valid = ", ".join(API_SCOPES)
    if not scopes:
        errors.append(InvalidField("scopes", scopes, f"must name at least one scope ({valid})"))
    errors.extend(
        InvalidField("scopes", scope, f"is not an API scope (valid scopes: {valid})")
        for scope in scopes
        if scope not in API_SCOPES
    )
    prefix = prefix_of(plaintext)
    if prefix is None:
        # Never echo a key, even a malformed one.
        errors.append(InvalidField("key", "(hidden)", "is not of the form pc_<8>_<43>"))
    elif session.scalar(sa.select(ApiKey.id).where(ApiKey.prefix == prefix)) is not None:
        errors.append(InvalidField("prefix", prefix, "is already used by another API key"))
    if errors or prefix is None:
        raise InvalidInput(errors)

    api_key = ApiKey(name=name, prefix=prefix, key_hash=hash_key(plaintext), scopes=scopes)
    session.add(api_key)
    session.flush()
    return api_key


def find_api_key(session: Session, plaintext: str) -> ApiKey | None:
    """The active key with this plaintext, or None (unknown, malformed or revoked)."""
    if prefix_of(plaintext) is None:
        return None
    return session.scalar(
        sa.select(ApiKey).where(ApiKey.key_hash == hash_key(plaintext), ApiKey.revoked_at.is_(None))
    )


@dataclasses.dataclass(frozen=True)
class VerifiedKey:
    """What a request needs to know about the active API key it presented."""

    id: uuid.UUID
    prefix: str
    scopes: tuple[str, ...]


_ACTIVE_KEY = sa.select(ApiKey.id, ApiKey.prefix, ApiKey.scopes).where(
    ApiKey.key_hash == sa.bindparam("key_hash"), ApiKey.revoked_at.is_(None)
)


def verify_api_key(session: Session, digest: str) -> VerifiedKey | None:
    """The active key whose SHA-256 (:func:`hash_key`) is ``digest``, or None.

    One indexed lookup by digest: a key has 256 bits of entropy, so a fast hash is safe.
    """
    row = session.execute(_ACTIVE_KEY, {"key_hash": digest}).one_or_none()
    return VerifiedKey(row.id, row.prefix, tuple(row.scopes)) if row is not None else None


def revoke_api_key(session: Session, prefix: str) -> ApiKey:
    """Revoke the key with this prefix (``abcd1234`` or ``pc_abcd1234``); idempotent."""
    prefix = prefix.strip().removeprefix(KEY_PREFIX)
    api_key = session.scalar(sa.select(ApiKey).where(ApiKey.prefix == prefix))
    if api_key is None:
        raise NotFound(f"prefix: {prefix!r} is not the prefix of any API key")
    if api_key.revoked_at is None:
        api_key.revoked_at = utcnow()
        session.flush()
    return api_key
