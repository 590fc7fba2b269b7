"""The suppression list: addresses that must not be contacted, kept only as keyed HMACs.

A row blocks one channel for one address HMAC for one reason (hard bounce, spam complaint,
erasure, manual do-not-contact, phone opposition list). The contact policy matches these
HMACs against ``customers.email_hmac`` / ``phone_hmac`` / ``postal_hmac`` in SQL, so every
HMAC here is computed exactly as the preference services compute the customer's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..addresses import address_hmac, normalize_email, normalize_phone, normalize_postal
from ..consent_settings import ADDRESS_KIND, ConsentSettings, invalid, invalid_field
from ..db import typed_recordset
from ..errors import InvalidField, InvalidInput
from ..models import Customer, Suppression, utcnow
from ..models.vocabulary import CHANNELS, SUPPRESSION_REASONS, TOPIC_KINDS

IMPORT_BATCH_SIZE = 5_000
MAX_NOTE_LENGTH = 500
# Only marketing calls are covered by a phone opposition list (Bloctel): it never blocks
# SMS, nor a service call the customer asked for.
OPPOSITION_CHANNEL = "phone"


def normalize_address(kind: str, value: Any, field: str | None = None) -> str:
    """The normal form of an email, phone or postal address (a mapping), or InvalidInput."""
    field = field or kind
    try:
        if kind == "email":
            return normalize_email(value, field)
        if kind == "phone":
            return normalize_phone(value, field)
    except InvalidInput as exc:
        # Same message, plus the machine code the portal translates.
        raise InvalidInput(
            [invalid_field(e.field, e.value, e.reason, f"invalid_{kind}") for e in exc.errors]
        ) from None
    if kind == "postal":
        if not isinstance(value, Mapping) or not value.get("line1") or not value.get("postal_code"):
            raise invalid(
                field, value, "is not a postal address (line1 and postal_code)", "invalid_postal"
            )
        return normalize_postal(value["line1"], value["postal_code"], value.get("country"))
    raise ValueError(f"unknown address kind {kind!r}")


def current_address_hmac(customer: Customer, kind: str, cfg: ConsentSettings) -> str | None:
    """HMAC of the customer's current address of ``kind`` (None if they have none).

    Computed from the address itself, not the ``*_hmac`` column, so that a customer whose
    columns were filled some other way is still matched on the address they really have.
    """
    if kind == "email":
        normalized = customer.email.strip().lower() if customer.email else None
    elif kind == "phone":
        normalized = customer.phone or None
    elif kind == "postal":
        normalized = (
            normalize_postal(customer.postal_line1, customer.postal_code, customer.country)
            if customer.postal_line1 and customer.postal_code
            else None
        )
    else:
        raise ValueError(f"unknown address kind {kind!r}")
    return address_hmac(cfg.address_key, kind, normalized) if normalized else None


def _check(channel: str | None = None, reason: str | None = None, note: str | None = None) -> None:
    """Check whichever of channel, reason and note are given; InvalidInput lists every problem."""
    errors: list[InvalidField] = []
    if channel is not None and channel not in CHANNELS:
        errors.append(
            invalid_field(
                "channel", channel, f"is not a channel ({', '.join(CHANNELS)})", "unknown_channel"
            )
        )
    if reason is not None and reason not in SUPPRESSION_REASONS:
        errors.append(
            invalid_field(
                "reason",
                reason,
                f"is not a suppression reason ({', '.join(SUPPRESSION_REASONS)})",
                "unknown_reason",
            )
        )
    elif reason == "phone_opposition" and channel is not None and channel != OPPOSITION_CHANNEL:
        errors.append(
            invalid_field(
                "reason", reason, "applies to marketing calls only (channel phone)", "wrong_channel"
            )
        )
    if note is not None and len(note) > MAX_NOTE_LENGTH:
        errors.append(
            invalid_field(
                "note", note[:50] + "…", f"is longer than {MAX_NOTE_LENGTH} characters", "too_long"
            )
        )
    if errors:
        raise InvalidInput(errors)


def _insert(session: Session, rows: list[dict[str, Any]]) -> int:
    """INSERT ... ON CONFLICT DO NOTHING; the number of rows actually added."""
    if not rows:
        return 0
    table = Suppression.__table__
    # RETURNING lists only the inserted rows, which is how duplicates are told apart.
    if session.get_bind().dialect.name == "postgresql":
        # The rows as one JSON parameter (a provider's batch: a few hundred at a time); a
        # multi-row VALUES list was a new 6 kB statement for the driver to parse each time.
        batch = typed_recordset(table, rows)
        statement: Any = (
            postgresql.insert(table)
            .from_select(list(rows[0]), sa.select(*(batch.c[n] for n in rows[0])))
            .on_conflict_do_nothing()
            .returning(table.c.id)
        )
        return len(session.execute(statement).all())
    statement = sqlite.insert(table).on_conflict_do_nothing().returning(table.c.id)
    return len(session.execute(statement, rows).all())


def _row(channel: str, hmac_: str, reason: str, note: str | None, now: dt.datetime) -> dict:
    return {
        "id": uuid.uuid4(),
        "channel": channel,
        "address_hmac": hmac_,
        "reason": reason,
        "note": note,
        "created_at": now,
    }


def suppress(
    session: Session,
    channel: str,
    address: Any,
    reason: str,
    *,
    cfg: ConsentSettings,
    note: str | None = None,
    now: dt.datetime | None = None,
) -> bool:
    """Put an address on the suppression list for a channel; True if it was not there yet.

    ``address`` is an email, a phone number (sms, phone) or a postal mapping (post).
    """
    _check(channel, reason, note)
    kind = ADDRESS_KIND[channel]
    hmac_ = address_hmac(cfg.address_key, kind, normalize_address(kind, address, "address"))
    return _insert(session, [_row(channel, hmac_, reason, note, now or utcnow())]) == 1


def suppress_many(
    session: Session,
    channel: str,
    entries: Iterable[tuple[Any, str, str | None]],
    *,
    cfg: ConsentSettings,
    now: dt.datetime | None = None,
) -> int:
    """:func:`suppress` for many ``(address, reason, note)`` at once: one statement.

    Returns how many were not on the list yet. An address that cannot be read is skipped
    (whoever reports it, a provider's batch, cannot correct it); a bad channel, reason or
    note is still an error.
    """
    _check(channel)
    now = now or utcnow()
    kind = ADDRESS_KIND[channel]
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for address, reason, note in entries:
        _check(channel, reason, note)
        try:
            normalized = normalize_address(kind, address, "address")
        except InvalidInput:
            continue
        hmac_ = address_hmac(cfg.address_key, kind, normalized)
        rows.setdefault((hmac_, reason), _row(channel, hmac_, reason, note, now))
    return _insert(session, list(rows.values()))


def suppression_reasons(
    session: Session, channel: str, address_hmac_: str | None, *, kind: str = "marketing"
) -> list[str]:
    """Why the address with this HMAC may not be contacted on ``channel`` (empty: it may)."""
    if not address_hmac_:
        return []
    reasons = session.scalars(
        sa.select(Suppression.reason)
        .where(Suppression.channel == channel, Suppression.address_hmac == address_hmac_)
        .order_by(Suppression.reason)
    ).all()
    if channel != OPPOSITION_CHANNEL or kind != "marketing":
        return [r for r in reasons if r != "phone_opposition"]
    return list(reasons)


def is_suppressed(
    session: Session,
    channel: str,
    address: Any,
    *,
    cfg: ConsentSettings,
    kind: str = "marketing",
) -> list[str]:
    """The suppression reasons for an address on a channel; empty if it may be contacted.

    ``kind`` is marketing or alert: a phone opposition list blocks marketing calls only.
    """
    _check(channel)
    if kind not in TOPIC_KINDS:
        raise invalid("kind", kind, f"is not a kind ({', '.join(TOPIC_KINDS)})", "unknown_kind")
    address_kind = ADDRESS_KIND[channel]
    hmac_ = address_hmac(
        cfg.address_key, address_kind, normalize_address(address_kind, address, "address")
    )
    return suppression_reasons(session, channel, hmac_, kind=kind)


def suppress_customer_addresses(
    session: Session,
    customer: Customer,
    reason: str,
    *,
    cfg: ConsentSettings,
    now: dt.datetime | None = None,
    note: str | None = None,
) -> int:
    """Suppress every address a customer has, on every channel using it (used at erasure).

    Returns the number of suppressions added. Call it before the addresses are scrubbed.
    """
    if reason == "phone_opposition":
        raise invalid(
            "reason",
            reason,
            "applies to marketing calls only, not to every channel",
            "wrong_reason",
        )
    _check(reason=reason, note=note)
    now = now or utcnow()
    rows = []
    for channel in CHANNELS:
        kind = ADDRESS_KIND[channel]
        # Fall back on the stored HMAC: it may outlive an address already scrubbed.
        hmac_ = current_address_hmac(customer, kind, cfg) or getattr(customer, f"{kind}_hmac")
        if hmac_:
            rows.append(_row(channel, hmac_, reason, note, now))
    return _insert(session, rows)


@dataclasses.dataclass(frozen=True)
class RejectedLine:
    line_number: int
    value: str
    reason: str


@dataclasses.dataclass
class ImportReport:
    """What an opposition-list import did: counts, and every line it could not read."""

    added: int = 0
    already_present: int = 0
    rejected: list[RejectedLine] = dataclasses.field(default_factory=list)


def _numbered_entries(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if entry and not entry.startswith("#"):
            yield number, entry


def import_phone_opposition(
    session: Session,
    lines: Iterable[str],
    *,
    cfg: ConsentSettings,
    now: dt.datetime | None = None,
    note: str | None = None,
) -> ImportReport:
    """Load an opposition list (France's Bloctel): one number per line, national or E.164.

    Set-based, for lists of millions: numbers are normalized in Python and inserted
    IMPORT_BATCH_SIZE at a time with INSERT ... ON CONFLICT DO NOTHING, so importing the
    same list again adds nothing. Blank lines and ``#`` comments are skipped; unreadable
    lines are reported, not fatal.
    """
    now = now or utcnow()
    report = ImportReport()
    batch: set[str] = set()
    valid_in_batch = 0

    def flush_batch() -> None:
        nonlocal valid_in_batch
        added = _insert(
            session,
            [_row(OPPOSITION_CHANNEL, h, "phone_opposition", note, now) for h in sorted(batch)],
        )
        report.added += added
        # Duplicates inside the file count as already present too.
        report.already_present += valid_in_batch - added
        batch.clear()
        valid_in_batch = 0

    for number, entry in _numbered_entries(lines):
        try:
            normalized = normalize_phone(entry)
        except InvalidInput as exc:
            report.rejected.append(RejectedLine(number, entry[:100], exc.errors[0].reason))
            continue
        batch.add(address_hmac(cfg.address_key, "phone", normalized))
        valid_in_batch += 1
        if valid_in_batch >= IMPORT_BATCH_SIZE:
            flush_batch()
    flush_batch()
    return report
