"""Addresses: validation, normal forms and the keyed HMACs suppressions are matched on."""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata

import phonenumbers

from .errors import InvalidInput

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize_email(value: str, field: str = "email") -> str:
    """Lower-cased, trimmed email, or InvalidInput saying why not."""
    email = (value or "").strip().lower()
    if len(email) > 320 or not _EMAIL.match(email):
        raise InvalidInput.one(field, value, "is not a valid email address")
    return email


def normalize_phone(value: str, field: str = "phone", region: str = "FR") -> str:
    """E.164 form of a phone number; national numbers are read in ``region``."""
    try:
        number = phonenumbers.parse((value or "").strip(), region)
    except phonenumbers.NumberParseException:
        raise InvalidInput.one(field, value, "is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidInput.one(
            field, value, "is not a valid phone number (use the international form, +33612345678)"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_postal(line1: str, postal_code: str, country: str | None) -> str:
    """A normal form of a postal address for matching (not for printing)."""
    text = f"{line1}|{postal_code}|{country or ''}"
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"\s+", " ", text.lower()).strip()


def address_hmac(key: bytes, kind: str, normalized: str) -> str:
    """Keyed HMAC-SHA256 of a normalized address; ``kind`` is email, phone or postal."""
    return hmac.new(key, f"{kind}:{normalized}".encode(), hashlib.sha256).hexdigest()


def derive_key(secret: str, purpose: str) -> bytes:
    """A per-purpose key derived from the server secret."""
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).digest()
