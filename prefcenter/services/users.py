"""Back-office users: creation with validated input, and password log-in."""

from __future__ import annotations

import functools
import re

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session

from ..errors import InvalidField, InvalidInput
from ..models import User, utcnow
from ..models.vocabulary import USER_ROLES

MIN_PASSWORD_LENGTH = 10
MAX_EMAIL_LENGTH = 320
# Plausible, not RFC 5322: one @, no spaces, a dot in the domain.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
# Shown instead of a password in error messages.
HIDDEN = "(hidden)"

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the e-mail is unknown, so both answers take as long."""
    return _hasher.hash("no such user, same answer time")


def normalize_email(email: str) -> str:
    return email.strip().lower()


def create_user(session: Session, email: str, password: str, role: str) -> User:
    """Create a back-office user; raise InvalidInput naming every bad field."""
    email = normalize_email(email)
    errors: list[InvalidField] = []
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.match(email):
        errors.append(
            InvalidField("email", email, "is not an e-mail address (expected name@domain.tld)")
        )
    elif session.scalar(sa.select(User.id).where(User.email == email)) is not None:
        errors.append(InvalidField("email", email, "is already used by another user"))
    if len(password) < MIN_PASSWORD_LENGTH:
        errors.append(
            InvalidField(
                "password",
                HIDDEN,
                f"is too short: at least {MIN_PASSWORD_LENGTH} characters, got {len(password)}",
            )
        )
    if role not in USER_ROLES:
        errors.append(
            InvalidField("role", role, f"is not a role (valid roles: {', '.join(USER_ROLES)})")
        )
    if errors:
        raise InvalidInput(errors)

    user = User(email=email, password_hash=_hasher.hash(password), role=role)
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The active user with this e-mail and password, or None. Records the log-in."""
    user = session.scalar(sa.select(User).where(User.email == normalize_email(email)))
    if user is None:
        _verify(_dummy_hash(), password)
        return None
    if not _verify(user.password_hash, password) or user.disabled_at is not None:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_login_at = utcnow()
    session.flush()
    return user


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
