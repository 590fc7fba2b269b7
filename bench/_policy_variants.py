"""Proposed changes to prefcenter/policy.py, measured by patching it in memory.

Nothing here changes prefcenter/: each proposal is a small edit of one function's
source text, compiled into a copy of the function and swapped in for the duration of
a measurement, then the originals are restored. When policy.py has changed so that
an edit no longer applies, the proposal is reported as not applicable instead of
measuring something else. ``python -m bench policy --variants`` runs them.

Set-based proposals (cumulative, in this order):

1. ``jit=off`` — ``SET LOCAL jit = off`` for the audience statement: the generated
   expression is so large that PostgreSQL spends more time JIT-compiling it than
   running it;
2. ``fences`` — ``OFFSET 0`` on the ``per_channel`` and ``staged`` subqueries, so
   that PostgreSQL computes each channel's reason (and the chosen channel) once per
   row instead of inlining the whole CASE wherever it is referenced;
3. ``estimates`` — the windows table LEFT JOINed (every customer has exactly one
   window, but an inner join on three expressions is estimated at ~40 rows instead
   of 1,000,000, which turns every later join into a nested loop), and the contact
   counts prefiltered by constant bounds instead of per-customer window bounds;
4. ``work_mem`` — ``SET LOCAL work_mem = '64MB'`` (hash joins and the count
   aggregation in memory instead of batches on disk);
5. ``cheap windows`` — the windows table filled from the distinct time zones of
   customers times the distinct contact hours of preferences (a superset: two small
   scans) instead of a DISTINCT over candidates x customers x preferences.

Per-customer proposals (cumulative):

1. ``suppression index`` — look suppressions up by ``(channel, address_hmac)``, which
   the ``ix_suppressions_lookup`` index serves (``address_hmac IN (...)`` alone
   cannot use it and reads the whole table for every call);
2. ``one contact-log read`` — the customer's marketing contacts around the contact
   time fetched once, every cap counted from them in Python (one statement instead
   of one per cap and channel);
3. ``rules cached`` — the active pressure rules read once per session;
4. ``two statements`` — the preference, subscription and consents in one statement,
   the suppressions and the contacts in a second one, as plain rows.
"""

from __future__ import annotations
import __future__

import contextlib
import dataclasses
import datetime as dt
import inspect
import uuid
from collections.abc import Callable, Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from prefcenter import policy
from prefcenter.models import (
    ChannelConsent,
    ContactLogEntry,
    ContactPreference,
    Customer,
    PressureRule,
    Suppression,
    TopicSubscription,
)
from prefcenter.models.base import UTCDateTime
from prefcenter.models.vocabulary import CHANNELS


class NotApplicable(Exception):
    """policy.py no longer contains the text a proposal edits."""


Edit = tuple[str, str]  # (old text, new text) in one function's source


@dataclasses.dataclass(frozen=True)
class Proposal:
    name: str
    what: str
    edits: dict[str, list[Edit]] = dataclasses.field(default_factory=dict)
    settings: dict[str, str] = dataclasses.field(default_factory=dict)
    replace: dict[str, Callable[..., Any]] = dataclasses.field(default_factory=dict)


_LITERAL_BOUNDS = (
    'log.at > windows.c[f"lo_{widest}"],\n            log.at < windows.c[f"hi_{widest}"],',
    # contact_at is `at` or the next opening of the window, less than a day (plus a
    # DST hour) later: these constants include every customer's bounds.
    "log.at > sa.literal(at - dt.timedelta(days=widest), UTCDateTime()),\n"
    "            log.at < sa.literal(at + dt.timedelta(days=widest + 2), UTCDateTime()),",
)

_CHEAP_WINDOWS = (
    """    distinct = session.execute(
        sa.select(
            Customer.timezone,
            sa.func.coalesce(ContactPreference.contact_start, _NO_HOURS),
            sa.func.coalesce(ContactPreference.contact_end, _NO_HOURS),
        )
        .select_from(Customer)
        .join(cid.table, cid == Customer.id)
        .outerjoin(ContactPreference, ContactPreference.customer_id == Customer.id)
        .distinct()
    ).all()""",
    """    zones = session.scalars(sa.select(Customer.timezone).distinct()).all()
    hours = session.execute(
        sa.select(ContactPreference.contact_start, ContactPreference.contact_end).distinct()
    ).all()
    pairs = {(_NO_HOURS, _NO_HOURS)} | {
        (_NO_HOURS if s is None else s, _NO_HOURS if e is None else e) for s, e in hours
    }
    distinct = [(zone, s, e) for zone in zones for s, e in sorted(pairs)]""",
)

SET_BASED: tuple[Proposal, ...] = (
    Proposal("as is", "prefcenter/policy.py unchanged"),
    Proposal("+ jit=off", "SET LOCAL jit = off", settings={"jit": "off"}),
    Proposal(
        "+ fences",
        "OFFSET 0 on per_channel and staged",
        edits={
            "_audience_query": [
                (').subquery("per_channel")', ').offset(0).subquery("per_channel")')
            ],
            "_choose_channel": [(').subquery("staged")', ').offset(0).subquery("staged")')],
        },
    ),
    Proposal(
        "+ estimates",
        "windows LEFT JOINed; counts prefiltered by constant bounds",
        edits={
            "_audience_query": [
                (".join(windows, window_join)", ".outerjoin(windows, window_join)"),
                (
                    "_counts_subquery(message, cid, windows, window_join, rules)",
                    "_counts_subquery(message, cid, windows, window_join, rules, at)",
                ),
            ],
            "_counts_subquery": [
                (
                    "rules: Sequence[PressureRule],\n) -> sa.Subquery:",
                    "rules: Sequence[PressureRule],\n    at: dt.datetime,\n) -> sa.Subquery:",
                ),
                (".join(windows, window_join)", ".outerjoin(windows, window_join)"),
                _LITERAL_BOUNDS,
            ],
        },
    ),
    Proposal("+ work_mem", "SET LOCAL work_mem = '64MB'", settings={"work_mem": "64MB"}),
    Proposal(
        "+ cheap windows",
        "windows from distinct zones x distinct hours",
        edits={"_fill_windows": [_CHEAP_WINDOWS]},
    ),
)


# --------------------------------------------------------------------------- per customer


def _suppressions_by_channel() -> Proposal:
    return Proposal(
        "+ suppression index",
        "suppressions looked up by (channel, address_hmac)",
        edits={
            "_load_facts": [
                (
                    "Suppression.address_hmac.in_(hmacs)",
                    "Suppression.channel.in_(('email', 'sms', 'phone')),\n"
                    "                Suppression.address_hmac.in_(hmacs),",
                )
            ]
        },
    )


def _contacts_read_once() -> Proposal:
    rows_by_customer: dict[uuid.UUID, list[Any]] = {}
    widest = dt.timedelta(days=91)  # pressure rules are limited to 90 days

    def count_contacts(
        session: Session,
        customer_id: uuid.UUID,
        contact_at: dt.datetime,
        days: int,
        *,
        channel: str | None = None,
        topic_id: uuid.UUID | None = None,
        exclude_ref: str | None = None,
    ) -> int:
        rows = rows_by_customer.get(customer_id)
        if rows is None:
            log = ContactLogEntry
            rows = rows_by_customer[customer_id] = list(
                session.execute(
                    sa.select(log.at, log.channel, log.topic_id, log.message_ref).where(
                        log.customer_id == customer_id,
                        log.kind == "marketing",
                        log.status.in_(policy.COUNTED_STATUSES),
                        log.at > contact_at - widest,
                        log.at < contact_at + widest,
                    )
                )
            )
        span = dt.timedelta(days=days)
        return sum(
            1
            for at, row_channel, row_topic, ref in rows
            if contact_at - span < at < contact_at + span
            and (channel is None or row_channel == channel)
            and (topic_id is None or row_topic == topic_id)
            and (exclude_ref is None or ref != exclude_ref)
        )

    return Proposal(
        "+ one contact-log read",
        "the customer's contacts fetched once, caps counted in Python",
        replace={"_count_contacts": count_contacts},
    )


def _rules_cached() -> Proposal:
    original = policy._active_rules
    cached: dict[int, list[PressureRule]] = {}

    def active_rules(session: Session) -> list[PressureRule]:
        if id(session) not in cached:
            cached[id(session)] = original(session)
        return cached[id(session)]

    return Proposal(
        "+ rules cached", "active pressure rules read once", replace={"_active_rules": active_rules}
    )


def _facts_in_two_statements(at: dt.datetime) -> Proposal:
    """Everything about one customer in two statements, as plain rows (no ORM objects).

    1. the preference, the topic subscription and the four channel consents, LEFT JOINed
       to the customer;
    2. ``UNION ALL`` of the customer's suppressions (by channel and address HMAC) and of
       their marketing contacts around ``at``; the caps are then counted in Python.
    """
    contacts: dict[uuid.UUID, list[Any]] = {}
    # contact_at is `at` or the window's next opening (less than a day and an hour later).
    low, high = at - dt.timedelta(days=91), at + dt.timedelta(days=93)

    # Both statements are built once, with bind parameters (building SQLAlchemy
    # expressions, aliases above all, costs more than running them).
    pref, sub, log, supp = ContactPreference, TopicSubscription, ContactLogEntry, Suppression
    consents = {ch: aliased(ChannelConsent, name=f"consent_{ch}") for ch in CHANNELS}
    facts = sa.select(
        pref.frequency,
        pref.channel_order,
        pref.contact_start,
        pref.contact_end,
        pref.paused_until,
        sub.status,
        sub.frequency,
        *(c for ch in CHANNELS for c in (consents[ch].status, consents[ch].confirmed_hmac)),
    ).select_from(Customer)
    facts = facts.outerjoin(pref, pref.customer_id == Customer.id).outerjoin(
        sub, sa.and_(sub.customer_id == Customer.id, sub.topic_id == sa.bindparam("topic"))
    )
    for ch, consent in consents.items():
        facts = facts.outerjoin(
            consent, sa.and_(consent.customer_id == Customer.id, consent.channel == ch)
        )
    facts = facts.where(Customer.id == sa.bindparam("customer"))
    marks = sa.select(
        sa.literal("s").label("k"),
        supp.channel,
        supp.reason,
        sa.null().label("at"),
        sa.null().label("topic_id"),
        sa.null().label("message_ref"),
    ).where(
        sa.or_(
            sa.and_(supp.channel == "email", supp.address_hmac == sa.bindparam("email")),
            sa.and_(supp.channel.in_(("sms", "phone")), supp.address_hmac == sa.bindparam("phone")),
            sa.and_(supp.channel == "post", supp.address_hmac == sa.bindparam("postal")),
        )
    )
    sent = sa.select(
        sa.literal("c"), log.channel, sa.null(), log.at, log.topic_id, log.message_ref
    ).where(
        log.customer_id == sa.bindparam("customer"),
        log.kind == "marketing",
        log.status.in_(policy.COUNTED_STATUSES),
        log.at > low,
        log.at < high,
    )
    marks_and_contacts = sa.union_all(marks, sent)

    def load_facts(session: Session, customer: Any, topic_id: uuid.UUID) -> Any:
        row = session.execute(facts, {"customer": customer.id, "topic": topic_id}).one()
        preference = (
            None
            if row[0] is None
            else SimpleNamespace(
                frequency=row[0],
                channel_order=row[1],
                contact_start=row[2],
                contact_end=row[3],
                paused_until=row[4],
            )
        )
        subscription = None if row[5] is None else SimpleNamespace(status=row[5], frequency=row[6])
        found = {}
        for i, ch in enumerate(CHANNELS):
            status, confirmed = row[7 + 2 * i], row[8 + 2 * i]
            if status is not None:
                found[ch] = SimpleNamespace(status=status, confirmed_hmac=confirmed)
        union = session.execute(
            marks_and_contacts,
            {
                "customer": customer.id,
                "email": customer.email_hmac,
                "phone": customer.phone_hmac,
                "postal": customer.postal_hmac,
            },
        )
        suppressed: dict[str, list[str]] = {}
        rows = []
        for kind, channel, reason, when, topic, ref in union:
            if kind == "s":
                suppressed.setdefault(channel, []).append(reason)
            else:
                rows.append(
                    (
                        UTCDateTime().process_result_value(when, session.get_bind().dialect),
                        channel,
                        topic,
                        ref,
                    )
                )
        contacts[customer.id] = rows
        return policy._Facts(customer, suppressed, found, subscription, preference)

    def count_contacts(
        session: Session,
        customer_id: uuid.UUID,
        contact_at: dt.datetime,
        days: int,
        *,
        channel: str | None = None,
        topic_id: uuid.UUID | None = None,
        exclude_ref: str | None = None,
    ) -> int:
        span = dt.timedelta(days=days)
        return sum(
            1
            for when, row_channel, row_topic, ref in contacts[customer_id]
            if contact_at - span < when < contact_at + span
            and (channel is None or row_channel == channel)
            and (topic_id is None or row_topic == topic_id)
            and (exclude_ref is None or ref != exclude_ref)
        )

    return Proposal(
        "+ two statements",
        "facts in one statement, suppressions and contacts in a second (UNION ALL), plain rows",
        replace={"_load_facts": load_facts, "_count_contacts": count_contacts},
    )


def per_customer_proposals(at: dt.datetime) -> tuple[Proposal, ...]:
    """Fresh proposals (their caches start empty)."""
    return (
        Proposal("as is", "prefcenter/policy.py unchanged"),
        _suppressions_by_channel(),
        _contacts_read_once(),
        _rules_cached(),
        _facts_in_two_statements(at),
    )


# --------------------------------------------------------------------------- applying


def _compile(name: str, edits: Sequence[Edit], namespace: dict[str, Any]) -> Callable[..., Any]:
    source = inspect.getsource(getattr(policy, name))
    for old, new in edits:
        if old not in source:
            raise NotApplicable(f"policy.{name} no longer contains {old.splitlines()[0]!r}")
        source = source.replace(old, new)
    flags = __future__.annotations.compiler_flag
    code = compile(source, f"<proposal: policy.{name}>", "exec", flags=flags, dont_inherit=True)
    exec(code, namespace)
    return namespace[name]


@contextlib.contextmanager
def applied(proposals: Sequence[Proposal]) -> Iterator[dict[str, str]]:
    """Swap the proposals' versions of policy functions in; yield their SET LOCALs."""
    edits: dict[str, list[Edit]] = {}
    replaced: dict[str, Callable[..., Any]] = {}
    settings: dict[str, str] = {}
    for proposal in proposals:
        for name, changes in proposal.edits.items():
            edits.setdefault(name, []).extend(changes)
        replaced.update(proposal.replace)
        settings.update(proposal.settings)
    # Patched functions look names up in this namespace, so they call each other's
    # patched versions (and the replacements).
    namespace = dict(vars(policy))
    namespace.update(dt=dt, sa=sa, UTCDateTime=UTCDateTime)
    functions = {name: _compile(name, changes, namespace) for name, changes in edits.items()}
    functions.update(replaced)
    namespace.update(functions)
    saved = {name: getattr(policy, name) for name in functions}
    try:
        for name, function in functions.items():
            setattr(policy, name, function)
        yield settings
    finally:
        for name, function in saved.items():
            setattr(policy, name, function)


def set_local(session: Session, settings: dict[str, str]) -> None:
    for name, value in settings.items():
        session.execute(sa.text(f"SET LOCAL {name} = '{value}'"))
