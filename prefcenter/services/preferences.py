"""Consent and contact preferences: the only code that changes them.

Channel consents, topic subscriptions, contact preferences and a customer's addresses and
timezone change here and nowhere else, so every change lands in the consent ledger in the
same transaction: one ledger row per changed field, none for a call that changes nothing.
Every function checks all of its input before writing anything; a rejected call raises
InvalidInput and leaves the state and the ledger as they were.

Consent statuses: ``granted``, ``pending`` (a double opt-in is in progress, or a confirmed
address changed; pending is *not* consent) and ``refused``. Which channels are opt-in and
which need a confirmed address is in :class:`prefcenter.consent_settings.ConsentSettings`.

Ledger values for ``address.*`` are keyed HMACs of the address, never the address itself:
the ledger is append-only and outlives a customer's erasure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import functools
import hashlib
import hmac
import importlib.resources
import secrets
import uuid
import zoneinfo
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .. import tokens
from ..addresses import address_hmac, derive_key, normalize_email, normalize_phone
from ..consent_settings import (
    ADDRESS_KIND,
    ConsentSettings,
    format_contact_hours,
    invalid,
    invalid_field,
)
from ..errors import InvalidField, InvalidInput
from ..models import (
    ChannelConsent,
    ConsentLedgerEntry,
    ContactPreference,
    Customer,
    Topic,
    TopicSubscription,
    utcnow,
)
from ..models.vocabulary import CHANNELS, FREQUENCIES
from . import ledger
from .ledger import Actor, record
from .suppressions import current_address_hmac, suppression_reasons

ADDRESS_KINDS = ("email", "phone", "postal")
# Channels whose address can be confirmed by a link (email) or a code (sms).
DOUBLE_OPT_IN_CHANNELS = ("email", "sms")
# Consent statuses in which the customer said yes (pending: not yet confirmed).
AGREED = ("granted", "pending")
# Purpose of the signed link sent for an email double opt-in (prefcenter.tokens).
DOUBLE_OPT_IN_PURPOSE = "double_opt_in"
MAX_SOURCE_LENGTH = 100
_POSTAL_FIELDS = {"line1": 200, "line2": 200, "postal_code": 20, "city": 100, "country": 2}
_POSTAL_REQUIRED = ("line1", "postal_code", "city")


@dataclasses.dataclass(frozen=True)
class Challenge:
    """A double opt-in to send: a link token (email) or a 6-digit code (sms)."""

    channel: str
    code: str | None
    token: str | None
    expires_at: dt.datetime


class ConfirmResult(enum.StrEnum):
    CONFIRMED = "confirmed"
    WRONG_CODE = "wrong_code"
    EXPIRED = "expired"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    NO_PENDING = "no_pending"
    ADDRESS_CHANGED = "address_changed"


# --- small helpers ------------------------------------------------------------------------


def _clock(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return utcnow()
    if now.tzinfo is None:
        raise ValueError(f"naive datetime {now!r}: times must be timezone-aware")
    return now


def _channel_error(channel: Any) -> InvalidField | None:
    if channel in CHANNELS:
        return None
    return invalid_field(
        "channel", channel, f"is not a channel ({', '.join(CHANNELS)})", "unknown_channel"
    )


def _raise_if(*errors: InvalidField | None) -> None:
    found = [e for e in errors if e is not None]
    if found:
        raise InvalidInput(found)


def _not_erased(customer: Customer) -> InvalidField | None:
    # Withdrawals stay possible after erasure; anything that adds data or consent does not.
    if customer.erased_at is None:
        return None
    return invalid_field("customer", str(customer.id), "has been erased", "erased")


def _source_error(source: Any, field: str = "source") -> InvalidField | None:
    if source is None or (isinstance(source, str) and 0 < len(source) <= MAX_SOURCE_LENGTH):
        return None
    return invalid_field(
        field, source, f"must be text of 1 to {MAX_SOURCE_LENGTH} characters", "invalid_source"
    )


def _sha256(text: str | None) -> str | None:
    return hashlib.sha256(text.encode()).hexdigest() if text is not None else None


def consent_for(customer: Customer, channel: str) -> ChannelConsent | None:
    """The customer's stored consent row for a channel, if any."""
    return next((c for c in customer.consents if c.channel == channel), None)


def _consent_row(customer: Customer, channel: str, status: str) -> ChannelConsent:
    consent = consent_for(customer, channel)
    if consent is None:
        consent = ChannelConsent(channel=channel, status=status, confirmation_attempts=0)
        customer.consents.append(consent)
    return consent


def _clear_challenge(consent: ChannelConsent) -> None:
    consent.confirmation_hash = None
    consent.confirmation_expires_at = None
    consent.confirmation_attempts = 0


def _address_hmac_for(customer: Customer, channel: str, cfg: ConsentSettings) -> str | None:
    return current_address_hmac(customer, ADDRESS_KIND[channel], cfg)


def _already_granted(
    consent: ChannelConsent | None, channel: str, current_hmac: str | None, cfg: ConsentSettings
) -> bool:
    """Granted, and for a channel needing a confirmed address, confirmed for the current one."""
    if consent is None or consent.status != "granted":
        return False
    if not cfg.needs_confirmation(channel):
        return True
    return (
        current_hmac is not None
        and consent.confirmed_hmac is not None
        and hmac.compare_digest(consent.confirmed_hmac, current_hmac)
    )


def has_confirmed_email(customer: Customer, cfg: ConsentSettings) -> bool:
    """The customer proved they own their current email (a confirmed double opt-in, or a
    grant with proof, for this very address). A withdrawal later does not undo the proof."""
    consent = consent_for(customer, "email")
    current = _address_hmac_for(customer, "email", cfg)
    return (
        consent is not None
        and current is not None
        and consent.confirmed_hmac is not None
        and hmac.compare_digest(consent.confirmed_hmac, current)
    )


def confirmed_email_owners(session: Session, email: str, *, cfg: ConsentSettings) -> list[Customer]:
    """Customers (not erased) whose current, confirmed email is ``email`` (normalized).

    Who may be sent a magic link: an address a customer merely typed in is not proof it is
    theirs, and may well be someone else's.
    """
    candidates = session.scalars(
        sa.select(Customer).where(Customer.email == email, Customer.erased_at.is_(None))
    ).all()
    return [c for c in candidates if has_confirmed_email(c, cfg)]


# --- contact preferences row ---------------------------------------------------------------


def ensure_preference(session: Session, customer: Customer) -> ContactPreference:
    """The customer's contact preferences, created with the defaults if missing.

    Creating the row is not a ledger change: every value in it means "the default".
    """
    if customer.preference is None:
        customer.preference = ContactPreference(
            frequency="any", channel_order="", contact_start=None, contact_end=None
        )
        session.flush()
    return customer.preference


# --- addresses -----------------------------------------------------------------------------


def _postal_values(value: Any) -> tuple[dict[str, str | None], list[InvalidField]]:
    errors: list[InvalidField] = []
    if not isinstance(value, Mapping):
        return {}, [invalid_field("postal", value, "is not a postal address", "invalid_postal")]
    for key in value:
        if key not in _POSTAL_FIELDS:
            errors.append(
                invalid_field(
                    f"postal.{key}",
                    value[key],
                    f"is not a postal address field ({', '.join(_POSTAL_FIELDS)})",
                    "unknown_field",
                )
            )
    cleaned: dict[str, str | None] = {}
    for key, max_length in _POSTAL_FIELDS.items():
        raw = value.get(key)
        text = " ".join(str(raw).split()) if raw is not None else ""
        if key == "country":
            text = text.upper()
        cleaned[key] = text or None
        if not text:
            if key in _POSTAL_REQUIRED:
                errors.append(invalid_field(f"postal.{key}", raw, "is required", "required"))
        elif key == "country" and not (len(text) == 2 and text.isascii() and text.isalpha()):
            errors.append(
                invalid_field(
                    "postal.country", raw, "is not a two-letter country code (FR)", "invalid"
                )
            )
        elif len(text) > max_length:
            errors.append(
                invalid_field(
                    f"postal.{key}", raw, f"is longer than {max_length} characters", "too_long"
                )
            )
    return cleaned, errors


def _postal_record_hmac(customer: Customer, cfg: ConsentSettings) -> str | None:
    """What the ledger records for ``address.postal``: an HMAC over every line.

    ``postal_hmac`` covers only what identifies a letterbox (for suppressions); the ledger
    must also see a change of line 2 or of the city.
    """
    lines = (
        customer.postal_line1,
        customer.postal_line2,
        customer.postal_code,
        customer.city,
        customer.country,
    )
    if not any(lines):
        return None
    return address_hmac(cfg.address_key, "postal-record", "|".join(x or "" for x in lines))


def _address_ledger_value(customer: Customer, kind: str, cfg: ConsentSettings) -> str | None:
    if kind == "postal":
        return _postal_record_hmac(customer, cfg)
    return current_address_hmac(customer, kind, cfg)


def _normalized_address(kind: str, value: Any) -> Any:
    """The normal form to store, or InvalidInput naming the field."""
    try:
        if kind == "email":
            return normalize_email(value if isinstance(value, str) else "", "email")
        if kind == "phone":
            return normalize_phone(value if isinstance(value, str) else "", "phone")
    except InvalidInput as exc:
        raise InvalidInput(
            [invalid_field(e.field, value, e.reason, f"invalid_{kind}") for e in exc.errors]
        ) from None
    cleaned, errors = _postal_values(value)
    _raise_if(*errors)
    return cleaned


def set_address(
    session: Session,
    customer: Customer,
    kind: str,
    value: Any,
    actor: Actor,
    *,
    cfg: ConsentSettings,
    now: dt.datetime | None = None,
) -> None:
    """Set (or with None/"" remove) the customer's email, phone or postal address.

    ``value`` is a string, or for postal a mapping of line1, line2, postal_code, city,
    country. A changed address is no longer the one the customer proved to own: channels
    that use it and need a confirmed address go from granted back to pending.
    """
    now = _clock(now)
    if kind not in ADDRESS_KINDS:
        raise invalid(
            "kind", kind, f"is not an address kind ({', '.join(ADDRESS_KINDS)})", "unknown_kind"
        )
    removing = (
        value is None or value == "" or (isinstance(value, Mapping) and not any(value.values()))
    )
    if not removing:
        _raise_if(_not_erased(customer))
    normalized = None if removing else _normalized_address(kind, value)

    before = _address_ledger_value(customer, kind, cfg)
    if kind == "email":
        customer.email = normalized
    elif kind == "phone":
        customer.phone = normalized
    else:
        postal = normalized or {}
        customer.postal_line1 = postal.get("line1")
        customer.postal_line2 = postal.get("line2")
        customer.postal_code = postal.get("postal_code")
        customer.city = postal.get("city")
        customer.country = postal.get("country")
    # The column the policy matches suppressions on, kept in step with the address.
    setattr(customer, f"{kind}_hmac", current_address_hmac(customer, kind, cfg))
    after = _address_ledger_value(customer, kind, cfg)

    if record(session, customer.id, actor, f"address.{kind}", before, after, now=now) is None:
        session.flush()
        return
    for channel in CHANNELS:
        if ADDRESS_KIND[channel] != kind or not cfg.needs_confirmation(channel):
            continue
        consent = consent_for(customer, channel)
        if consent is not None and consent.status == "granted":
            consent.status = "pending"
            record(
                session,
                customer.id,
                actor,
                f"consent.{channel}",
                "granted",
                "pending",
                details={"reason": "address_changed"},
                now=now,
            )
    session.flush()


def _is_empty_address(value: Any) -> bool:
    if isinstance(value, Mapping):
        # The country alone (the form suggests FR) is no address.
        return not any(str(v or "").strip() for k, v in value.items() if k != "country")
    return value is None or (isinstance(value, str) and not value.strip())


def remove_address(
    session: Session,
    customer: Customer,
    kind: str,
    actor: Actor,
    *,
    cfg: ConsentSettings,
    now: dt.datetime | None = None,
) -> bool:
    """The customer asked to delete their email, phone or postal address (through the
    ledger, as any change); False when there was none to remove."""
    if kind not in ADDRESS_KINDS:
        raise invalid(
            "kind", kind, f"is not an address kind ({', '.join(ADDRESS_KINDS)})", "unknown_kind"
        )
    had = _address_ledger_value(customer, kind, cfg) is not None
    set_address(session, customer, kind, None, actor, cfg=cfg, now=now)
    return had


@dataclasses.dataclass(frozen=True)
class AddressChange:
    """What :func:`change_address` did: whether the address changed, and the confirmations
    (double opt-ins) to send to the new address."""

    changed: bool
    challenges: tuple[Challenge, ...] = ()


def change_address(
    session: Session,
    customer: Customer,
    kind: str,
    value: Any,
    actor: Actor,
    *,
    cfg: ConsentSettings,
    secret: str,
    notice_text: str | None = None,
    now: dt.datetime | None = None,
) -> AddressChange:
    """The customer typed a new email, phone or postal address in the portal.

    As :func:`set_address`, then for the channels that need this address confirmed
    (email, sms): a customer who had agreed (granted, or a confirmation in progress) is sent
    a confirmation to the new address at once, and so is one who asks for it now by ticking
    the consent notice (``notice_text``, kept as its hash). Re-entering the current address
    changes nothing, and a channel already confirmed for it stays as it is.
    """
    now = _clock(now)
    if _is_empty_address(value):
        # A blank form is not a way to delete an address: that is remove_address.
        raise invalid(kind, value, "is empty: enter an address, or remove it", "empty_address")
    channels = [
        c for c in DOUBLE_OPT_IN_CHANNELS if ADDRESS_KIND[c] == kind and cfg.needs_confirmation(c)
    ]
    agreed = {c: getattr(consent_for(customer, c), "status", None) in AGREED for c in channels}
    before = _address_ledger_value(customer, kind, cfg) if kind in ADDRESS_KINDS else None
    set_address(session, customer, kind, value, actor, cfg=cfg, now=now)
    changed = _address_ledger_value(customer, kind, cfg) != before
    challenges = []
    for channel in channels:
        if not ((changed and agreed[channel]) or notice_text is not None):
            continue
        current = _address_hmac_for(customer, channel, cfg)
        if current is None or _already_granted(
            consent_for(customer, channel), channel, current, cfg
        ):
            continue
        challenges.append(
            start_double_opt_in(
                session,
                customer,
                channel,
                actor,
                cfg=cfg,
                secret=secret,
                notice_text=notice_text,
                now=now,
            )
        )
    return AddressChange(changed=changed, challenges=tuple(challenges))


# --- channel consent -----------------------------------------------------------------------


def _proof_value(proof: Any, now: dt.datetime) -> tuple[dict[str, Any], list[InvalidField]]:
    if not isinstance(proof, Mapping):
        return {}, [invalid_field("proof", proof, "must be an object", "invalid_proof")]
    errors: list[InvalidField] = []
    cleaned = dict(proof)
    if not isinstance(proof.get("source"), str) or not proof["source"].strip():
        errors.append(
            invalid_field(
                "proof.source",
                proof.get("source"),
                "is required (where consent was given)",
                "required",
            )
        )
    collected = proof.get("collected_at")
    if isinstance(collected, str):
        try:
            collected = dt.datetime.fromisoformat(collected)
        except ValueError:
            collected = None
    if not isinstance(collected, dt.datetime) or collected.tzinfo is None:
        errors.append(
            invalid_field(
                "proof.collected_at",
                proof.get("collected_at"),
                "must be a date and time with a time zone (2026-03-01T10:00:00+01:00)",
                "invalid_datetime",
            )
        )
    elif collected > now:
        errors.append(
            invalid_field(
                "proof.collected_at", proof.get("collected_at"), "is in the future", "future"
            )
        )
    else:
        cleaned["collected_at"] = collected.astimezone(dt.UTC).isoformat()
    text = proof.get("text")
    if text is not None and not isinstance(text, str):
        errors.append(invalid_field("proof.text", text, "must be text", "invalid_proof"))
    return cleaned, errors


def grant_with_proof(
    session: Session,
    customer: Customer,
    channel: str,
    actor: Actor,
    *,
    source: str,
    proof: Mapping[str, Any],
    notice_text: str | None = None,
    cfg: ConsentSettings,
    now: dt.datetime | None = None,
) -> ChannelConsent:
    """Grant consent on the word of an API client or import that holds the proof.

    ``proof`` has ``source``, ``collected_at`` and optionally ``text``; it is kept in the
    ledger. The address the consent was collected for is the customer's current one.
    """
    now = _clock(now)
    cleaned, proof_errors = _proof_value(proof, now)
    channel_error = _channel_error(channel)
    current = None if channel_error else _address_hmac_for(customer, channel, cfg)
    no_address = (
        invalid_field(channel, None, "has no address: add one first", "no_address")
        if not channel_error and current is None
        else None
    )
    _raise_if(
        _not_erased(customer), channel_error, _source_error(source), *proof_errors, no_address
    )

    consent = consent_for(customer, channel)
    if consent is not None and _already_granted(consent, channel, current, cfg):
        return consent
    before = consent.status if consent else None
    consent = _consent_row(customer, channel, "granted")
    notice_hash = _sha256(notice_text)
    consent.status = "granted"
    consent.mechanism = "api_proof"
    consent.source = source
    consent.confirmed_hmac = current
    consent.granted_at = now
    consent.notice_hash = notice_hash
    _clear_challenge(consent)
    record(
        session,
        customer.id,
        actor,
        f"consent.{channel}",
        before,
        "granted",
        details={
            "mechanism": "api_proof",
            "source": source,
            "proof": cleaned,
            "notice_hash": notice_hash,
        },
        now=now,
    )
    session.flush()
    return consent


def grant_from_form(
    session: Session,
    customer: Customer,
    channel: str,
    actor: Actor,
    *,
    notice_text: str | None,
    cfg: ConsentSettings,
    secret: str,
    now: dt.datetime | None = None,
) -> Challenge | None:
    """The customer ticked "yes" for a channel in the portal.

    Opt-out channels (phone, post) are granted at once and None is returned. An opt-in
    channel (email, sms) needs a confirmed address: a double opt-in starts and its
    Challenge is returned for the caller to send. None as well if already granted.
    """
    now = _clock(now)
    _raise_if(_not_erased(customer), _channel_error(channel))
    consent = consent_for(customer, channel)
    if cfg.regime(channel) == "opt_in":
        if _already_granted(consent, channel, _address_hmac_for(customer, channel, cfg), cfg):
            return None
        return start_double_opt_in(
            session,
            customer,
            channel,
            actor,
            cfg=cfg,
            secret=secret,
            notice_text=notice_text,
            now=now,
        )

    if consent is not None and consent.status == "granted":
        return None
    before = consent.status if consent else None
    consent = _consent_row(customer, channel, "granted")
    notice_hash = _sha256(notice_text)
    consent.status = "granted"
    consent.mechanism = "portal_form"
    consent.source = "portal"
    consent.confirmed_hmac = _address_hmac_for(customer, channel, cfg)
    consent.granted_at = now
    consent.notice_hash = notice_hash
    _clear_challenge(consent)
    record(
        session,
        customer.id,
        actor,
        f"consent.{channel}",
        before,
        "granted",
        details={"mechanism": "portal_form", "notice_hash": notice_hash},
        now=now,
    )
    session.flush()
    return None


def refuse(
    session: Session,
    customer: Customer,
    channel: str,
    actor: Actor,
    *,
    now: dt.datetime | None = None,
    source: str | None = None,
) -> ChannelConsent:
    """Withdraw or refuse consent for a channel (always allowed, even after erasure).

    The withdrawal is a new ledger row; the grant's row stays as the record of the grant.
    A double opt-in in progress is cancelled so an old link cannot undo the refusal.
    """
    now = _clock(now)
    _raise_if(_channel_error(channel), _source_error(source))
    consent = consent_for(customer, channel)
    if consent is not None and consent.status == "refused":
        return consent
    before = consent.status if consent else None
    consent = _consent_row(customer, channel, "refused")
    consent.status = "refused"
    consent.mechanism = None
    consent.refused_at = now
    if source is not None:
        consent.source = source
    _clear_challenge(consent)
    record(
        session,
        customer.id,
        actor,
        f"consent.{channel}",
        before,
        "refused",
        details={"source": source} if source else None,
        now=now,
    )
    session.flush()
    return consent


# --- double opt-in -------------------------------------------------------------------------
#
# ``confirmation_hash`` holds 128 hex characters: the HMAC of the address the challenge
# was sent to (64), then a keyed HMAC of the SMS code or of the email link's nonce (64).
# Keeping the address lets a confirmation for an address since replaced be told apart
# from a wrong code; keying the code HMAC with the server secret stops anyone with a copy
# of the database from trying the million possible codes offline.


def _challenge_hmac(secret: str, customer_id: uuid.UUID, channel: str, value: str) -> str:
    key = derive_key(secret, "double-opt-in")
    return hmac.new(key, f"{customer_id}:{channel}:{value}".encode(), hashlib.sha256).hexdigest()


def start_double_opt_in(
    session: Session,
    customer: Customer,
    channel: str,
    actor: Actor,
    *,
    cfg: ConsentSettings,
    secret: str,
    notice_text: str | None = None,
    now: dt.datetime | None = None,
) -> Challenge:
    """Start (or restart) confirming the customer's email or phone for a channel.

    The consent becomes pending; only the latest challenge works. The caller sends the
    returned link token or code. A suppressed address is never sent a confirmation.
    """
    now = _clock(now)
    channel_error = (
        invalid_field(
            "channel",
            channel,
            f"cannot be confirmed with a link or code ({', '.join(DOUBLE_OPT_IN_CHANNELS)})",
            "no_double_opt_in",
        )
        if channel not in DOUBLE_OPT_IN_CHANNELS
        else None
    )
    _raise_if(_not_erased(customer), channel_error)
    current = _address_hmac_for(customer, channel, cfg)
    address = customer.email if channel == "email" else customer.phone
    if current is None:
        raise invalid(channel, None, "has no address to confirm", "no_address")
    # A confirmation is a service message, not marketing: the phone opposition list
    # (marketing calls) does not stop it, every other suppression does.
    if suppression_reasons(session, channel, current, kind="alert"):
        raise invalid(channel, address, "this address cannot receive messages", "suppressed")
    consent = consent_for(customer, channel)
    if _already_granted(consent, channel, current, cfg):
        raise invalid(channel, address, "is already granted", "already_granted")

    before = consent.status if consent else None
    consent = _consent_row(customer, channel, "pending")
    expires_at = now + dt.timedelta(hours=cfg.double_opt_in_hours)
    if channel == "email":
        nonce = secrets.token_urlsafe(16)
        payload = {"customer": str(customer.id), "channel": channel, "nonce": nonce}
        token = tokens.sign(
            secret, DOUBLE_OPT_IN_PURPOSE, {**payload, "address": current}, expires_at
        )
        code = None
        proof_of_possession = nonce
    else:
        code = f"{secrets.randbelow(1_000_000):06d}"
        token = None
        proof_of_possession = code
    consent.status = "pending"
    consent.confirmation_hash = current + _challenge_hmac(
        secret, customer.id, channel, proof_of_possession
    )
    consent.confirmation_expires_at = expires_at
    consent.confirmation_attempts = 0
    if notice_text is not None:
        consent.notice_hash = _sha256(notice_text)
    record(
        session,
        customer.id,
        actor,
        f"consent.{channel}",
        before,
        "pending",
        details={
            "mechanism": "double_opt_in",
            "step": "started",
            "expires_at": expires_at.isoformat(),
        },
        now=now,
    )
    session.flush()
    return Challenge(channel=channel, code=code, token=token, expires_at=expires_at)


def double_opt_in_target(secret: str, token: str, *, now: dt.datetime) -> tuple[uuid.UUID, str]:
    """(customer id, channel) named by a double opt-in link; raises tokens.BadToken.

    For the portal, which must find the customer before calling confirm_double_opt_in.
    """
    payload = tokens.verify(secret, DOUBLE_OPT_IN_PURPOSE, token, now=now)
    try:
        return uuid.UUID(payload["customer"]), str(payload["channel"])
    except (KeyError, ValueError, TypeError):
        raise tokens.TokenInvalid("not a double opt-in token") from None


def confirm_double_opt_in(
    session: Session,
    customer: Customer,
    channel: str,
    code_or_token: str,
    actor: Actor,
    *,
    cfg: ConsentSettings,
    secret: str,
    now: dt.datetime | None = None,
) -> ConfirmResult:
    """Check a code (sms) or link token (email); on success the channel is granted."""
    now = _clock(now)
    _raise_if(_not_erased(customer), _channel_error(channel))
    consent = consent_for(customer, channel)
    if (
        consent is None
        or consent.status != "pending"
        or not consent.confirmation_hash
        or consent.confirmation_expires_at is None
    ):
        return ConfirmResult.NO_PENDING
    if consent.confirmation_attempts >= cfg.max_code_attempts:
        return ConfirmResult.TOO_MANY_ATTEMPTS
    if now >= consent.confirmation_expires_at:
        return ConfirmResult.EXPIRED
    sent_to, expected = consent.confirmation_hash[:64], consent.confirmation_hash[64:]
    current = _address_hmac_for(customer, channel, cfg)
    if current is None or not hmac.compare_digest(sent_to, current):
        return ConfirmResult.ADDRESS_CHANGED

    answer: str | None
    if channel == "email":
        try:
            payload = tokens.verify(secret, DOUBLE_OPT_IN_PURPOSE, code_or_token or "", now=now)
        except tokens.TokenExpired:
            return ConfirmResult.EXPIRED
        except tokens.TokenInvalid:
            payload = {}
        if payload.get("customer") != str(customer.id) or payload.get("channel") != channel:
            answer = None
        elif not hmac.compare_digest(str(payload.get("address", "")), current):
            # A link sent to the customer's previous address.
            return ConfirmResult.ADDRESS_CHANGED
        else:
            answer = str(payload.get("nonce", ""))
    else:
        answer = "".join((code_or_token or "").split())

    if answer is None or not hmac.compare_digest(
        _challenge_hmac(secret, customer.id, channel, answer), expected
    ):
        # Kept although the answer is wrong: this counter is what stops someone guessing a
        # 6-digit code, so it is reported as a result (the caller commits) and not raised.
        consent.confirmation_attempts += 1
        session.flush()
        return ConfirmResult.WRONG_CODE

    consent.status = "granted"
    consent.mechanism = "double_opt_in"
    consent.confirmed_hmac = current
    consent.granted_at = now
    _clear_challenge(consent)
    record(
        session,
        customer.id,
        actor,
        f"consent.{channel}",
        "pending",
        "granted",
        details={
            "mechanism": "double_opt_in",
            "confirmed_at": now.isoformat(),
            "address_hmac": current,
            "notice_hash": consent.notice_hash,
        },
        now=now,
    )
    session.flush()
    return ConfirmResult.CONFIRMED


# --- topics ----------------------------------------------------------------------------------


def _subscription(customer: Customer, topic: Topic) -> TopicSubscription | None:
    return next((s for s in customer.subscriptions if s.topic_id == topic.id), None)


def _new_subscription(customer: Customer, topic: Topic, status: str) -> TopicSubscription:
    subscription = TopicSubscription(topic=topic, status=status, frequency=None)
    customer.subscriptions.append(subscription)
    return subscription


def set_subscription(
    session: Session,
    customer: Customer,
    topic: Topic,
    subscribed: bool,
    actor: Actor,
    *,
    now: dt.datetime | None = None,
) -> None:
    """Subscribe to or unsubscribe from a topic (an explicit choice, kept even for opt-out
    topics, where having no row already means "receives it")."""
    now = _clock(now)
    if subscribed:
        _raise_if(
            _not_erased(customer),
            None
            if topic.active
            else invalid_field(f"topic.{topic.key}", topic.key, "is no longer offered", "inactive"),
        )
    subscription = _subscription(customer, topic)
    before = subscription.status if subscription else None
    after = "subscribed" if subscribed else "unsubscribed"
    if before == after:
        return
    if subscription is None:
        subscription = _new_subscription(customer, topic, after)
    subscription.status = after
    record(session, customer.id, actor, f"topic.{topic.key}", before, after, now=now)
    session.flush()


def _frequency_error(field: str, frequency: Any, allow_none: bool) -> InvalidField | None:
    if frequency in FREQUENCIES or (allow_none and frequency is None):
        return None
    return invalid_field(
        field, frequency, f"is not a frequency ({', '.join(FREQUENCIES)})", "unknown_frequency"
    )


def set_topic_frequency(
    session: Session,
    customer: Customer,
    topic: Topic,
    frequency: str | None,
    actor: Actor,
    *,
    now: dt.datetime | None = None,
) -> None:
    """The customer's own cadence for one topic; None leaves only the overall cadence."""
    now = _clock(now)
    field = f"topic_frequency.{topic.key}"
    subscription = _subscription(customer, topic)
    receives = subscription.status == "subscribed" if subscription else topic.regime == "opt_out"
    _raise_if(_not_erased(customer), _frequency_error(field, frequency, allow_none=True))
    if frequency is not None and not receives:
        raise invalid(
            field, frequency, "is for a topic you are not subscribed to", "not_subscribed"
        )
    before = subscription.frequency if subscription else None
    if before == frequency:
        return
    if subscription is None:
        # An opt-out topic the customer receives by default: choosing its cadence makes
        # the subscription explicit, and that is a change of its own in the ledger.
        subscription = _new_subscription(customer, topic, "subscribed")
        record(
            session,
            customer.id,
            actor,
            f"topic.{topic.key}",
            None,
            "subscribed",
            details={"reason": "frequency_set"},
            now=now,
        )
    subscription.frequency = frequency
    record(session, customer.id, actor, field, before, frequency, now=now)
    session.flush()


# --- how often, in what order, when --------------------------------------------------------


def frequency_lowered_by_us(session: Session, customer: Customer) -> dt.datetime | None:
    """When the current overall frequency was set by the system (a re-engagement program's
    sunset), not by the customer: the portal says so and offers to choose again."""
    latest = session.scalars(
        sa.select(ConsentLedgerEntry)
        .where(
            ConsentLedgerEntry.customer_id == customer.id,
            ConsentLedgerEntry.field == "frequency",
        )
        .order_by(ConsentLedgerEntry.at.desc(), ConsentLedgerEntry.id.desc())
        .limit(1)
    ).first()
    if latest is None or latest.actor_type != "system":
        return None
    preference = customer.preference
    if preference is None or preference.frequency != latest.after:
        return None
    return latest.at


def set_frequency(
    session: Session,
    customer: Customer,
    frequency: str,
    actor: Actor,
    *,
    now: dt.datetime | None = None,
) -> None:
    """Overall marketing cadence: any, weekly (1 per 7 days) or monthly (1 per 30 days)."""
    now = _clock(now)
    _raise_if(_not_erased(customer), _frequency_error("frequency", frequency, allow_none=False))
    preference = ensure_preference(session, customer)
    if preference.frequency == frequency:
        return
    record(session, customer.id, actor, "frequency", preference.frequency, frequency, now=now)
    preference.frequency = frequency
    session.flush()


def set_channel_order(
    session: Session,
    customer: Customer,
    channels: Sequence[str],
    actor: Actor,
    *,
    now: dt.datetime | None = None,
) -> None:
    """Channels most preferred first; an empty list means the default order."""
    now = _clock(now)
    shown = ",".join(str(c) for c in channels) if not isinstance(channels, str) else channels
    errors: list[InvalidField | None] = [_not_erased(customer)]
    if isinstance(channels, str):
        errors.append(invalid_field("channel_order", shown, "must be a list", "invalid"))
    else:
        unknown = [c for c in channels if c not in CHANNELS]
        if unknown:
            errors.append(
                invalid_field(
                    "channel_order",
                    shown,
                    f"names unknown channel(s) {', '.join(map(str, unknown))} "
                    f"({', '.join(CHANNELS)})",
                    "unknown_channel",
                )
            )
        elif len(set(channels)) != len(channels):
            errors.append(
                invalid_field("channel_order", shown, "names a channel twice", "duplicate")
            )
    _raise_if(*errors)
    preference = ensure_preference(session, customer)
    if preference.channel_order == shown:
        return
    record(
        session,
        customer.id,
        actor,
        "channel_order",
        preference.channel_order or None,
        shown or None,
        now=now,
    )
    preference.channel_order = shown
    session.flush()


def set_contact_hours(
    session: Session,
    customer: Customer,
    start_minute: int | None,
    end_minute: int | None,
    actor: Actor,
    *,
    now: dt.datetime | None = None,
) -> None:
    """The daily window (minutes after local midnight) the customer may be contacted in.

    ``end < start`` is a window across midnight (22:00-08:00); both None = the default.
    """
    now = _clock(now)
    shown = f"{start_minute}-{end_minute}"
    error: InvalidField | None = None
    if (start_minute is None) != (end_minute is None):
        error = invalid_field("contact_hours", shown, "needs both a start and an end", "incomplete")
    elif start_minute is not None and end_minute is not None:
        if not isinstance(start_minute, int) or not 0 <= start_minute <= 1439:
            error = invalid_field(
                "contact_hours", shown, "start must be 00:00 to 23:59", "out_of_range"
            )
        elif not isinstance(end_minute, int) or not 0 <= end_minute <= 1440:
            error = invalid_field(
                "contact_hours", shown, "end must be 00:00 to 24:00", "out_of_range"
            )
        elif start_minute == end_minute:
            error = invalid_field(
                "contact_hours", shown, "start and end must differ", "empty_window"
            )
    _raise_if(_not_erased(customer), error)
    preference = ensure_preference(session, customer)
    before = format_contact_hours(preference.contact_start, preference.contact_end)
    after = format_contact_hours(start_minute, end_minute)
    if before == after:
        return
    record(session, customer.id, actor, "contact_hours", before, after, now=now)
    preference.contact_start, preference.contact_end = start_minute, end_minute
    session.flush()


# Names in the time zone database that are no place's time: a placeholder and a link to
# the server's own zone.
NOT_TIMEZONES = frozenset({"Factory", "localtime"})
# IANA's regions: a canonical zone is named Region/Place (Europe/Paris).
TIMEZONE_REGIONS = (
    "Africa",
    "America",
    "Antarctica",
    "Arctic",
    "Asia",
    "Atlantic",
    "Australia",
    "Europe",
    "Indian",
    "Pacific",
)


@functools.cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - NOT_TIMEZONES


def _zone_tab() -> set[str] | None:
    """The canonical zones listed in the time zone database's zone.tab, if it is there."""
    candidates: list[Any] = [Path(base) / "zone.tab" for base in zoneinfo.TZPATH]
    with contextlib.suppress(ModuleNotFoundError):  # the tzdata package, where it is used
        candidates.append(importlib.resources.files("tzdata").joinpath("zoneinfo/zone.tab"))
    for path in candidates:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        return {
            line.split("\t")[2].strip()
            for line in text.splitlines()
            if line and not line.startswith("#") and line.count("\t") >= 2
        }
    return None


@functools.cache
def customer_timezones() -> tuple[str, ...]:
    """The time zones a customer may choose, sorted: real places' zones (Europe/Paris).

    Not ``Factory`` or ``localtime``, not ``Etc/*`` (fixed offsets with inverted signs), not
    the legacy aliases kept for old software (``US/Eastern``, ``GB``, ``EST5EDT``,
    ``Asia/Calcutta``): the canonical zones of zone.tab when the database has it, else
    every Region/Place name.
    """
    available = _timezones()
    chosen = available & (_zone_tab() or set())
    if not chosen:
        chosen = {name for name in available if name.split("/")[0] in TIMEZONE_REGIONS}
    return tuple(sorted(chosen))


def set_timezone(
    session: Session,
    customer: Customer,
    tz: str,
    actor: Actor,
    *,
    allowed: Collection[str] | None = None,
    now: dt.datetime | None = None,
) -> None:
    """The customer's IANA timezone (Europe/Paris), in which contact hours are read.

    ``allowed`` narrows the names accepted (the portal offers customer_timezones());
    by default any zone of the database except Factory and localtime.
    """
    now = _clock(now)
    known = _timezones() if allowed is None else allowed
    error = (
        None
        if isinstance(tz, str) and tz in known
        else invalid_field("timezone", tz, "is not a time zone (e.g. Europe/Paris)", "unknown")
    )
    _raise_if(_not_erased(customer), error)
    if customer.timezone == tz:
        return
    record(session, customer.id, actor, "timezone", customer.timezone, tz, now=now)
    customer.timezone = tz
    session.flush()


def pause(
    session: Session,
    customer: Customer,
    until: dt.datetime,
    actor: Actor,
    *,
    now: dt.datetime | None = None,
) -> None:
    """No marketing until ``until`` (alerts still go)."""
    now = _clock(now)
    error: InvalidField | None = None
    if not isinstance(until, dt.datetime) or until.tzinfo is None:
        error = invalid_field(
            "paused_until", until, "must be a date and time with a time zone", "invalid_datetime"
        )
    elif until <= now:
        error = invalid_field("paused_until", until.isoformat(), "is not in the future", "past")
    _raise_if(_not_erased(customer), error)
    preference = ensure_preference(session, customer)
    until = until.astimezone(dt.UTC)
    if preference.paused_until == until:
        return
    record(session, customer.id, actor, "paused_until", preference.paused_until, until, now=now)
    preference.paused_until = until
    session.flush()


def resume(
    session: Session,
    customer: Customer,
    actor: Actor,
    *,
    now: dt.datetime | None = None,
) -> None:
    """End a pause now."""
    now = _clock(now)
    preference = ensure_preference(session, customer)
    if preference.paused_until is None:
        return
    record(session, customer.id, actor, "paused_until", preference.paused_until, None, now=now)
    preference.paused_until = None
    session.flush()


# --- a batch of withdrawals and subscriptions, set-based -----------------------------------


@dataclasses.dataclass(frozen=True)
class BatchChange:
    """One change in a batch: refuse ``channel``, or (un)subscribe ``topic_id``.

    ``details`` go to the change's ledger row (where it came from: a provider's event id).
    """

    customer_id: uuid.UUID
    channel: str | None = None
    topic_id: uuid.UUID | None = None
    subscribed: bool = False
    source: str | None = None
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class BatchResult:
    changed: int = 0  # ledger rows written (one per field that really changed)
    unchanged: int = 0  # changes that changed nothing (already so)
    refused: int = 0  # changes a single call would refuse: subscribing erased / inactive


def _locked(session: Session, statement: Any) -> Any:
    # Rows about to be rewritten from what is read here: lock them (PostgreSQL) so that a
    # concurrent change waits, and is not lost nor recorded with a wrong "before".
    if session.get_bind().dialect.name == "postgresql":
        return statement.with_for_update()
    return statement


def apply_batch(
    session: Session, changes: Sequence[BatchChange], actor: Actor, *, now: dt.datetime
) -> BatchResult:
    """Apply changes in their order, as :func:`refuse` and :func:`set_subscription` one
    after the other would, with a few statements for the whole batch.

    Same rules as those functions: a refusal is always allowed; subscribing needs a
    customer not erased and an active topic (such a change is counted as refused and
    skipped, not raised: one bad change must not fail a provider's whole batch). Exactly
    one ledger row per field changed by a change, in order, none for a no-op.
    Core statements: ORM objects of these rows already loaded in the session are stale.
    """
    now = _clock(now)
    result = BatchResult()
    if not changes:
        return result
    customer_ids = sorted({c.customer_id for c in changes}, key=str)
    _raise_if(*(_channel_error(c.channel) for c in changes if c.channel is not None))
    _raise_if(*(_source_error(c.source) for c in changes))
    topic_ids = {c.topic_id for c in changes if c.topic_id is not None}
    topics = {
        t.id: t
        for t in session.execute(
            sa.select(Topic.id, Topic.key, Topic.active).where(Topic.id.in_(topic_ids))
        )
    }
    erased: set[uuid.UUID] = set()
    if any(c.subscribed for c in changes):  # only subscribing needs a customer not erased
        erased = set(
            session.scalars(
                sa.select(Customer.id).where(
                    Customer.id.in_(customer_ids), Customer.erased_at.is_not(None)
                )
            )
        )
    consents: dict[tuple[uuid.UUID, str], str] = {}
    channels = {c.channel for c in changes if c.channel is not None}
    if channels:
        consents = {
            (r.customer_id, r.channel): r.status
            for r in session.execute(
                _locked(
                    session,
                    sa.select(
                        ChannelConsent.customer_id, ChannelConsent.channel, ChannelConsent.status
                    )
                    .where(
                        ChannelConsent.customer_id.in_(customer_ids),
                        ChannelConsent.channel.in_(channels),
                    )
                    .order_by(ChannelConsent.customer_id, ChannelConsent.channel),
                )
            )
        }
    subscriptions: dict[tuple[uuid.UUID, uuid.UUID], str] = {}
    if topic_ids:
        subscriptions = {
            (r.customer_id, r.topic_id): r.status
            for r in session.execute(
                _locked(
                    session,
                    sa.select(
                        TopicSubscription.customer_id,
                        TopicSubscription.topic_id,
                        TopicSubscription.status,
                    )
                    .where(
                        TopicSubscription.customer_id.in_(customer_ids),
                        TopicSubscription.topic_id.in_(topic_ids),
                    )
                    .order_by(TopicSubscription.customer_id, TopicSubscription.topic_id),
                )
            )
        }

    ledger_rows: list[dict[str, Any]] = []
    refusals: dict[tuple[uuid.UUID, str], dict[str, Any]] = {}
    subscribed: dict[tuple[uuid.UUID, uuid.UUID], str] = {}
    for change in changes:
        if change.channel is not None:
            key = (change.customer_id, change.channel)
            before = consents.get(key)
            if before == "refused":
                result.unchanged += 1
                continue
            consents[key] = "refused"
            refusals[key] = {"source": change.source}
            field, after = f"consent.{change.channel}", "refused"
            details = {"source": change.source} if change.source else {}
        else:
            topic = topics.get(change.topic_id)
            if topic is None or (
                change.subscribed and (change.customer_id in erased or not topic.active)
            ):
                result.refused += 1
                continue
            key = (change.customer_id, change.topic_id)
            before = subscriptions.get(key)
            after = "subscribed" if change.subscribed else "unsubscribed"
            if before == after:
                result.unchanged += 1
                continue
            subscriptions[key] = subscribed[key] = after
            field, details = f"topic.{topic.key}", {}
        row = ledger.entry_row(
            change.customer_id,
            actor,
            field,
            before,
            after,
            details={**details, **change.details},
            now=now,
        )
        ledger_rows.append(row)
    _write_refusals(session, refusals, now)
    _write_subscriptions(session, subscribed, now)
    result.changed = ledger.record_many(session, ledger_rows)
    return result


def _upsert(session: Session, table: sa.Table) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _write_refusals(
    session: Session, refusals: dict[tuple[uuid.UUID, str], dict[str, Any]], now: dt.datetime
) -> None:
    """What :func:`refuse` does to a consent row, for many rows in one statement."""
    if not refusals:
        return
    table = ChannelConsent.__table__
    rows = [
        {
            "id": uuid.uuid4(),
            "customer_id": customer_id,
            "channel": channel,
            "status": "refused",
            "source": values["source"],
            "mechanism": None,
            "refused_at": now,
            "confirmation_hash": None,
            "confirmation_expires_at": None,
            "confirmation_attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
        for (customer_id, channel), values in refusals.items()
    ]
    insert = _upsert(session, table)
    excluded = insert.excluded
    statement = insert.on_conflict_do_update(
        index_elements=["customer_id", "channel"],
        set_={
            "status": excluded.status,
            "mechanism": None,
            "refused_at": excluded.refused_at,
            # A refusal without a source keeps the row's source, as refuse() does.
            "source": sa.func.coalesce(excluded.source, table.c.source),
            "confirmation_hash": None,
            "confirmation_expires_at": None,
            "confirmation_attempts": 0,
            "updated_at": excluded.updated_at,
        },
    )
    session.execute(statement, rows)


def _write_subscriptions(
    session: Session, subscribed: dict[tuple[uuid.UUID, uuid.UUID], str], now: dt.datetime
) -> None:
    """The final status of each subscription the batch changed, in one statement."""
    if not subscribed:
        return
    table = TopicSubscription.__table__
    rows = [
        {
            "customer_id": customer_id,
            "topic_id": topic_id,
            "status": status,
            "frequency": None,
            "created_at": now,
            "updated_at": now,
        }
        for (customer_id, topic_id), status in subscribed.items()
    ]
    insert = _upsert(session, table)
    statement = insert.on_conflict_do_update(
        index_elements=["customer_id", "topic_id"],
        set_={"status": insert.excluded.status, "updated_at": insert.excluded.updated_at},
    )
    session.execute(statement, rows)
