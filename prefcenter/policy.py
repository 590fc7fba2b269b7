"""THE contact policy: may we contact customer C on channel X about topic T now?

One set of rules in two forms that must agree (a Hypothesis test proves it):

* :func:`decide` / :func:`choose` — per customer, used at send time and by the
  portal's "what you will receive";
* :func:`audience` — set-based SQL over any candidate set of customers, used to
  plan millions at once without loading customers into Python.

Rules, checked in this order (the first that fails gives the reason):

1. ``erased`` / ``suppressed`` — erased customer; the address is on the suppression list
   (``phone_opposition`` only stops *marketing* phone calls).
2. ``unreachable`` — no address for the channel, or (channels needing confirmation,
   email and SMS by default) the address was never confirmed.
3. ``no_consent`` — opt-in channels need ``granted`` (``pending`` is not consent);
   opt-out channels are allowed until ``refused``.
4. ``topic_unsubscribed`` — opt-in topics need a subscription; opt-out topics are
   allowed until unsubscribed.
5. ``paused`` — marketing paused until a later time (alerts still go).
6. ``frequency_cap`` — the customer's cadence (overall and for the topic) and every
   active global pressure rule must hold, counting messages sent *or reserved*.
7. quiet hours — outside the customer's contact window the decision is
   ``defer`` until the next opening, never a silent drop.

Alerts obey 1-4 and 7, not 5-6, and do not count toward caps.

Frequency windows: a cap of N messages per rolling P days holds when, for the
contact time t, fewer than N messages lie in (t - P, t + P). For N = 1 (the
customer's own cadence) that is exact; for N > 1 it is conservative — never more
than N in any P-day window, even with reservations planned in the future.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import uuid
from collections.abc import Iterator, Sequence
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, aliased

from .consent_settings import ConsentSettings
from .db import set_local
from .models import (
    ChannelConsent,
    ContactLogEntry,
    ContactPreference,
    Customer,
    PolicyState,
    PressureRule,
    Suppression,
    Topic,
    TopicSubscription,
)
from .models.base import UTCDateTime
from .models.vocabulary import CHANNELS

SEND, DEFER, SKIP = "send", "defer", "skip"
QUIET_HOURS = "quiet_hours"
# Rule order: the first failing rule is the reason.
REASONS = (
    "erased",
    "suppressed",
    "unreachable",
    "no_consent",
    "topic_unsubscribed",
    "paused",
    "frequency_cap",
    QUIET_HOURS,
)
CADENCE_DAYS = {"weekly": 7, "monthly": 30}
COUNTED_STATUSES = ("reserved", "sent")
_ADDRESS_HMAC = {"email": "email_hmac", "sms": "phone_hmac", "phone": "phone_hmac"}


@dataclasses.dataclass(frozen=True)
class Decision:
    decision: str  # send | defer | skip
    channel: str | None
    reason: str | None = None
    until: dt.datetime | None = None

    @property
    def contacts(self) -> bool:
        return self.decision in (SEND, DEFER)


@dataclasses.dataclass(frozen=True)
class Message:
    """What is to be sent: about which topic, of which kind, on which channels."""

    topic_id: uuid.UUID
    topic_regime: str  # opt_in | opt_out
    kind: str  # marketing | alert
    channels: tuple[str, ...]
    # Excluded when counting caps: the message's own reservations (send-time re-check).
    message_ref: str | None = None

    @classmethod
    def for_topic(
        cls, topic: Topic, channels: Sequence[str], kind: str | None = None, message_ref=None
    ) -> Message:
        unknown = [c for c in channels if c not in CHANNELS]
        if unknown or not channels:
            raise ValueError(f"channels {list(channels)!r}: expected some of {CHANNELS}")
        return cls(topic.id, topic.regime, kind or topic.kind, tuple(channels), message_ref)


# --------------------------------------------------------------------------- windows


@dataclasses.dataclass(frozen=True)
class Window:
    """The customer's contact window evaluated at one instant."""

    open_now: bool
    next_open: dt.datetime | None  # UTC; None when open now

    def contact_at(self, at: dt.datetime) -> dt.datetime:
        return at if self.open_now else self.next_open  # type: ignore[return-value]


def _zone(name: str | None, default: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or default)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default)


def _wall_to_utc(day: dt.date, minute: int, zone: ZoneInfo) -> dt.datetime:
    """The first instant at or after local wall time ``day minute`` (DST-safe)."""
    naive = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=minute)
    first = naive.replace(tzinfo=zone, fold=0)
    if first.astimezone(dt.UTC).astimezone(zone).replace(tzinfo=None) == naive:
        return first.astimezone(dt.UTC)  # exists (first occurrence when it repeats)
    # In a spring-forward gap: the window opens when the clocks jump, found by bisection.
    low = naive.replace(tzinfo=zone, fold=1).astimezone(dt.UTC)
    high = first.astimezone(dt.UTC)
    low, high = min(low, high), max(low, high)
    while high - low > dt.timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0) if high.microsecond == 0 else high


def contact_window(
    timezone: str | None,
    start: int | None,
    end: int | None,
    at: dt.datetime,
    cfg: ConsentSettings,
) -> Window:
    """Is ``at`` inside the window [start, end) (local minutes), and if not, when next?

    ``start > end`` is a window crossing midnight (22:00-08:00); ``start == end``
    means any time.
    """
    default_start, default_end = cfg.default_contact_hours
    start = default_start if start is None else start
    end = default_end if end is None else end
    if start == end or (start == 0 and end >= 1440):
        return Window(True, None)
    zone = _zone(timezone, cfg.default_timezone)
    local = at.astimezone(zone)
    minute = local.hour * 60 + local.minute
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    if inside:
        return Window(True, None)
    day = local.date() if minute < start else local.date() + dt.timedelta(days=1)
    return Window(False, _wall_to_utc(day, start, zone))


# --------------------------------------------------------------------------- shared pieces


def effective_order(
    customer_order: Sequence[str], message_channels: Sequence[str], cfg: ConsentSettings
) -> tuple[str, ...]:
    """The message's channels in the customer's order; unlisted ones follow in default order."""
    listed = [c for c in customer_order if c in message_channels]
    rest = [c for c in cfg.default_channel_order if c in message_channels and c not in listed]
    rest += [c for c in message_channels if c not in listed and c not in rest]
    return tuple(dict.fromkeys(listed + rest))


def customer_order(text: str | None) -> tuple[str, ...]:
    """A stored channel order, or () (the default order) when it is not a valid one."""
    order = tuple((text or "").split(",")) if text else ()
    return order if order in _VALID_ORDERS else ()


@dataclasses.dataclass(frozen=True)
class _Rule:
    """An active global pressure rule (a plain row: the policy only reads it)."""

    channel: str | None
    period_days: int
    max_messages: int


def _periods(rules: Sequence[_Rule]) -> list[int]:
    return sorted({7, 30, *(r.period_days for r in rules)})


def _in_rule_order(rules: Iterator[_Rule] | Sequence[_Rule]) -> list[_Rule]:
    return sorted(rules, key=lambda r: (r.period_days, r.channel is not None, r.channel or ""))


def _active_rules(session: Session) -> list[_Rule]:
    rows = session.execute(
        sa.select(PressureRule.channel, PressureRule.period_days, PressureRule.max_messages).where(
            PressureRule.active.is_(True)
        )
    )
    return _in_rule_order(_Rule(*row) for row in rows)


def _rule_applies(rule: _Rule, channel: str) -> bool:
    return rule.channel is None or rule.channel == channel


# --------------------------------------------------------------------------- per customer


@dataclasses.dataclass(frozen=True)
class _Preference:
    frequency: str
    channel_order: str
    contact_start: int | None
    contact_end: int | None
    paused_until: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class _Subscription:
    status: str
    frequency: str | None


@dataclasses.dataclass(frozen=True)
class _Consent:
    status: str
    confirmed_hmac: str | None


@dataclasses.dataclass(frozen=True)
class _Contact:
    """A marketing message sent or reserved: what the caps count."""

    at: dt.datetime
    channel: str
    topic_id: uuid.UUID | None
    message_ref: str


@dataclasses.dataclass
class _Facts:
    customer: Customer
    suppressed: dict[str, list[str]]  # channel -> suppression reasons
    consents: dict[str, _Consent]
    subscription: _Subscription | None
    preference: _Preference | None
    contacts: list[_Contact]  # within _CONTACTS_BEFORE / _CONTACTS_AFTER of the instant
    rules: list[_Rule]  # active, in rule order


# pressure_rules.period_days is at most 90 (check constraint); the contact time is at
# most a day and a DST hour after the instant: these spans hold every contact a cap counts.
_CONTACTS_BEFORE = dt.timedelta(days=90)
_CONTACTS_AFTER = dt.timedelta(days=92)


def _facts_statement() -> sa.CompoundSelect:
    """Everything the policy reads about one customer, in one round trip.

    One ``UNION ALL`` of plain rows tagged by kind: the preference, the topic
    subscription, the channel consents, the suppressions of the customer's addresses,
    their counted contacts around the instant, and the active pressure rules. Built
    once, with bind parameters (building SQL expressions costs more than running them),
    and with ``OR`` rather than ``IN`` lists, which are re-rendered at every execution.
    """
    text, number = sa.String(), sa.Integer()
    when, ref = UTCDateTime(), sa.Uuid()

    def row(
        kind: str,
        a: Any = None,
        b: Any = None,
        c: Any = None,
        i: Any = None,
        j: Any = None,
        t: Any = None,
        u: Any = None,
    ) -> list[sa.ColumnElement[Any]]:
        def typed(value: Any, type_: sa.types.TypeEngine[Any]) -> sa.ColumnElement[Any]:
            # Typed NULLs: PostgreSQL cannot match an untyped NULL column to a timestamp.
            if value is None:
                return sa.cast(sa.null(), type_)
            return sa.type_coerce(value, type_)  # read as plain values (no enum checks)

        return [
            sa.literal(kind, text).label("kind"),
            typed(a, text).label("a"),
            typed(b, text).label("b"),
            typed(c, text).label("c"),
            typed(i, number).label("i"),
            typed(j, number).label("j"),
            typed(t, when).label("t"),
            typed(u, ref).label("u"),
        ]

    pref, sub, consent = ContactPreference, TopicSubscription, ChannelConsent
    supp, log, rule = Suppression, ContactLogEntry, PressureRule
    customer = sa.bindparam("customer", type_=sa.Uuid())
    return sa.union_all(
        sa.select(
            *row(
                "preference",
                pref.frequency,
                pref.channel_order,
                i=pref.contact_start,
                j=pref.contact_end,
                t=pref.paused_until,
            )
        ).where(pref.customer_id == customer),
        sa.select(*row("subscription", sub.status, sub.frequency)).where(
            sub.customer_id == customer, sub.topic_id == sa.bindparam("topic", type_=sa.Uuid())
        ),
        sa.select(*row("consent", consent.channel, consent.status, consent.confirmed_hmac)).where(
            consent.customer_id == customer
        ),
        sa.select(*row("suppression", supp.channel, supp.reason)).where(
            sa.or_(
                sa.and_(supp.channel == "email", supp.address_hmac == sa.bindparam("email")),
                sa.and_(
                    sa.or_(supp.channel == "sms", supp.channel == "phone"),
                    supp.address_hmac == sa.bindparam("phone"),
                ),
                sa.and_(supp.channel == "post", supp.address_hmac == sa.bindparam("postal")),
            )
        ),
        sa.select(*row("contact", log.channel, c=log.message_ref, t=log.at, u=log.topic_id)).where(
            log.customer_id == customer,
            log.kind == "marketing",
            sa.or_(*(log.status == status for status in COUNTED_STATUSES)),
            log.at > sa.bindparam("contacts_from", type_=when),
            log.at < sa.bindparam("contacts_to", type_=when),
        ),
        sa.select(*row("rule", rule.channel, i=rule.period_days, j=rule.max_messages)).where(
            rule.active.is_(True)
        ),
    )


_FACTS = _facts_statement()


def _load_facts(
    session: Session, customer: Customer, topic_id: uuid.UUID, at: dt.datetime
) -> _Facts:
    rows = session.execute(
        _FACTS,
        {
            "customer": customer.id,
            "topic": topic_id,
            "email": customer.email_hmac,
            "phone": customer.phone_hmac,
            "postal": customer.postal_hmac,
            "contacts_from": at - _CONTACTS_BEFORE,
            "contacts_to": at + _CONTACTS_AFTER,
        },
    )
    facts = _Facts(customer, {}, {}, None, None, [], [])
    rules = []
    for kind, a, b, c, i, j, t, u in rows:
        if kind == "preference":
            facts.preference = _Preference(a, b, i, j, t)
        elif kind == "subscription":
            facts.subscription = _Subscription(a, b)
        elif kind == "consent":
            facts.consents[a] = _Consent(b, c)
        elif kind == "suppression":
            facts.suppressed.setdefault(a, []).append(b)
        elif kind == "contact":
            facts.contacts.append(_Contact(t, a, u, c))
        else:
            rules.append(_Rule(a, i, j))
    facts.rules = _in_rule_order(rules)
    return facts


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One rule's verdict, for :func:`explain`."""

    rule: str
    passed: bool
    detail: dict[str, Any]


def _has_address(customer: Customer, channel: str) -> bool:
    if channel == "email":
        return bool(customer.email)
    if channel in ("sms", "phone"):
        return bool(customer.phone)
    return bool(customer.postal_line1 and customer.postal_code and customer.city)


def _address_hmac(customer: Customer, channel: str) -> str | None:
    return getattr(customer, _ADDRESS_HMAC[channel]) if channel in _ADDRESS_HMAC else None


def _count_contacts(
    facts: _Facts,
    contact_at: dt.datetime,
    days: int,
    *,
    channel: str | None = None,
    topic_id: uuid.UUID | None = None,
    exclude_ref: str | None = None,
) -> int:
    span = dt.timedelta(days=days)
    low, high = contact_at - span, contact_at + span
    return sum(
        1
        for c in facts.contacts
        if low < c.at < high
        and (channel is None or c.channel == channel)
        and (topic_id is None or c.topic_id == topic_id)
        and (exclude_ref is None or c.message_ref != exclude_ref)
    )


def _verdicts(
    facts: _Facts, channel: str, message: Message, at: dt.datetime, cfg: ConsentSettings
) -> list[Verdict]:
    """Every rule's verdict for one channel, in rule order (not short-circuited)."""
    customer, preference = facts.customer, facts.preference
    marketing = message.kind == "marketing"
    verdicts: list[Verdict] = []

    verdicts.append(Verdict("erased", customer.erased_at is None, {}))

    reasons = [
        r
        for r in facts.suppressed.get(channel, [])
        if r != "phone_opposition" or (channel == "phone" and marketing)
    ]
    verdicts.append(Verdict("suppressed", not reasons, {"reasons": sorted(reasons)}))

    consent = facts.consents.get(channel)
    has_address = _has_address(customer, channel)
    confirmed = True
    if channel in cfg.confirm_channels:
        confirmed = bool(
            consent is not None
            and consent.confirmed_hmac
            and consent.confirmed_hmac == _address_hmac(customer, channel)
        )
    verdicts.append(
        Verdict(
            "unreachable",
            has_address and confirmed,
            {"has_address": has_address, "confirmed": confirmed},
        )
    )

    status = consent.status if consent is not None else None
    regime = cfg.regimes[channel]
    consented = status == "granted" if regime == "opt_in" else status != "refused"
    verdicts.append(Verdict("no_consent", consented, {"status": status, "regime": regime}))

    subscription_status = facts.subscription.status if facts.subscription else None
    if message.topic_regime == "opt_in":
        subscribed = subscription_status == "subscribed"
    else:
        subscribed = subscription_status != "unsubscribed"
    verdicts.append(
        Verdict(
            "topic_unsubscribed",
            subscribed,
            {"status": subscription_status, "regime": message.topic_regime},
        )
    )

    window = contact_window(
        customer.timezone,
        preference.contact_start if preference else None,
        preference.contact_end if preference else None,
        at,
        cfg,
    )
    paused_until = preference.paused_until if preference else None
    if marketing:
        paused = paused_until is not None and paused_until > at
        verdicts.append(Verdict("paused", not paused, {"until": paused_until}))
        verdicts.append(_cap_verdict(facts, channel, message, window.contact_at(at)))
    verdicts.append(
        Verdict(
            QUIET_HOURS,
            window.open_now,
            {
                "until": window.next_open,
                "timezone": customer.timezone,
                "start": preference.contact_start if preference else None,
                "end": preference.contact_end if preference else None,
            },
        )
    )
    return verdicts


def _cap_verdict(facts: _Facts, channel: str, message: Message, contact_at: dt.datetime) -> Verdict:
    exclude = message.message_ref
    exceeded: list[dict[str, Any]] = []
    frequency = facts.preference.frequency if facts.preference else "any"
    if frequency in CADENCE_DAYS:
        days = CADENCE_DAYS[frequency]
        if _count_contacts(facts, contact_at, days, exclude_ref=exclude) >= 1:
            exceeded.append({"cap": "frequency", "frequency": frequency})
    topic_frequency = facts.subscription.frequency if facts.subscription else None
    if topic_frequency in CADENCE_DAYS:
        days = CADENCE_DAYS[topic_frequency]
        count = _count_contacts(
            facts, contact_at, days, topic_id=message.topic_id, exclude_ref=exclude
        )
        if count >= 1:
            exceeded.append({"cap": "topic_frequency", "frequency": topic_frequency})
    for rule in facts.rules:
        if not _rule_applies(rule, channel):
            continue
        count = _count_contacts(
            facts,
            contact_at,
            rule.period_days,
            channel=rule.channel,
            exclude_ref=exclude,
        )
        if count >= rule.max_messages:
            exceeded.append(
                {
                    "cap": "pressure",
                    "channel": rule.channel,
                    "period_days": rule.period_days,
                    "max_messages": rule.max_messages,
                }
            )
    return Verdict("frequency_cap", not exceeded, {"exceeded": exceeded})


def _decision_from(channel: str, verdicts: Sequence[Verdict]) -> Decision:
    for verdict in verdicts:
        if verdict.passed:
            continue
        if verdict.rule == QUIET_HOURS:
            return Decision(DEFER, channel, QUIET_HOURS, verdict.detail["until"])
        return Decision(SKIP, channel, verdict.rule)
    return Decision(SEND, channel)


def decide(
    session: Session,
    customer: Customer,
    channel: str,
    topic: Topic,
    kind: str,
    at: dt.datetime,
    *,
    cfg: ConsentSettings,
    message_ref: str | None = None,
) -> Decision:
    """The decision for one customer on one channel."""
    message = Message(topic.id, topic.regime, kind, (channel,), message_ref)
    facts = _load_facts(session, customer, message.topic_id, at)
    return _decision_from(channel, _verdicts(facts, channel, message, at, cfg))


def choose(
    session: Session, customer: Customer, message: Message, at: dt.datetime, *, cfg: ConsentSettings
) -> Decision:
    """The channel this customer would get the message on, by their own order.

    The first channel that passes (send, or defer for quiet hours) wins; when none
    does, the skip reason is the one of the customer's first-choice channel.
    """
    facts = _load_facts(session, customer, message.topic_id, at)
    order = effective_order(
        customer_order(facts.preference.channel_order if facts.preference else None),
        message.channels,
        cfg,
    )
    first: Decision | None = None
    for channel in order:
        decision = _decision_from(channel, _verdicts(facts, channel, message, at, cfg))
        if decision.contacts:
            return decision
        first = first or decision
    assert first is not None
    return first


def explain(
    session: Session,
    customer: Customer,
    channel: str,
    topic: Topic,
    kind: str,
    at: dt.datetime,
    *,
    cfg: ConsentSettings,
) -> tuple[Decision, list[Verdict]]:
    """The decision and every rule's verdict (see prefcenter.explanations for sentences)."""
    message = Message(topic.id, topic.regime, kind, (channel,))
    facts = _load_facts(session, customer, topic.id, at)
    verdicts = _verdicts(facts, channel, message, at, cfg)
    return _decision_from(channel, verdicts), verdicts


# --------------------------------------------------------------------------- set-based


def _all_orders() -> list[tuple[str, ...]]:
    orders: list[tuple[str, ...]] = [()]
    for size in range(1, len(CHANNELS) + 1):
        orders.extend(itertools.permutations(CHANNELS, size))
    return orders


_ALL_ORDERS = _all_orders()
_VALID_ORDERS = frozenset(_ALL_ORDERS)


class Audience:
    """A set-based policy query over candidate customers; see :func:`audience`.

    ``query`` selects ``customer_id, channel, decision, reason, until, contact_at``
    (one row per candidate customer); ``contact_at`` is when the message would go
    (now, or the next window opening).
    """

    def __init__(self, query: sa.Select, windows: sa.FromClause) -> None:
        self.query = query
        self.windows = windows


# PostgreSQL settings for the audience statement (restored when the block ends): its
# expression is large enough that JIT compilation costs more than running it, and its
# hash joins and aggregation over a million customers need more than the default 4 MB.
_POSTGRES_SETTINGS = {"jit": "off", "work_mem": "128MB"}


@contextlib.contextmanager
def audience(
    session: Session,
    message: Message,
    candidates: sa.Select,
    at: dt.datetime,
    *,
    cfg: ConsentSettings,
    few: bool | None = None,
) -> Iterator[Audience]:
    """Decisions for every customer id selected by ``candidates``, computed in SQL.

    ``few``: the caller knows the candidates are a few thousand at most (a dispatch
    batch), which saves counting them; None: counted.

    Time-zone arithmetic (the only part SQL engines disagree on) is done in Python
    once per distinct (timezone, contact hours) and joined in as a small table of
    constants, with the same :func:`contact_window` the per-customer form uses; so is
    each stored channel order's effective order for this message.

    On PostgreSQL the consents, the preference and the counted contacts come from
    ``policy_state`` (one narrow row per customer, kept by triggers: see
    :class:`~prefcenter.models.PolicyState`); on SQLite from the tables themselves.
    """
    rules = _active_rules(session)
    periods = _periods(rules)
    cid = candidates.subquery("candidates").c[0]
    constants = _Constants(session)
    try:
        with _postgres_settings(session, constants.postgres):
            windows = constants.table(
                "windows",
                _window_columns(periods),
                _window_rows(session, cid, at, periods, cfg, message.topic_id, few=few),
            )
            orders = constants.table("orders", _order_columns(message), _order_rows(message, cfg))
            query = _audience_query(
                message, cid, windows, orders, rules, at, cfg, constants.postgres
            )
            yield Audience(query, windows)
    finally:
        constants.drop()


@contextlib.contextmanager
def _postgres_settings(session: Session, postgres: bool) -> Iterator[None]:
    if not postgres:
        yield
        return
    saved = set_local(session, _POSTGRES_SETTINGS)
    yield  # not put back after an error: the transaction is rolled back, and they with it
    set_local(session, saved)


class _Constants:
    """Small tables of constants for the audience query.

    On PostgreSQL they are arrays unnested in the query itself: parallel workers may
    read them, which they may not do with a temporary table; elsewhere they are
    temporary tables, dropped by :meth:`drop`.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self.postgres = session.get_bind().dialect.name == "postgresql"
        self.created: list[sa.Table] = []

    def table(
        self, name: str, columns: Sequence[sa.Column[Any]], rows: Sequence[dict[str, Any]]
    ) -> sa.FromClause:
        if self.postgres:
            arrays = [
                sa.cast(
                    sa.bindparam(
                        f"{name}_{c.name}", [r[c.name] for r in rows], type_=ARRAY(c.type)
                    ),
                    ARRAY(c.type),
                )
                for c in columns
            ]
            return (
                sa.func.unnest(*arrays)
                .table_valued(*(sa.column(c.name, c.type) for c in columns))
                .render_derived(name=name)
            )
        table = sa.Table(
            f"policy_{name}_{uuid.uuid4().hex[:10]}",
            sa.MetaData(),
            *columns,
            prefixes=["TEMPORARY"],
        )
        connection = self.session.connection()
        table.create(connection)
        self.created.append(table)
        for i in range(0, len(rows), 500):
            connection.execute(table.insert(), rows[i : i + 500])
        return table

    def drop(self) -> None:
        for table in self.created:
            table.drop(self.session.connection())


_NO_HOURS = -1  # stands for NULL contact hours in the windows table's key
_FEW_CANDIDATES = 10_000  # up to this many, the windows come from the candidates' own zones


def _window_columns(periods: Sequence[int]) -> list[sa.Column[Any]]:
    columns = [
        sa.Column("timezone", sa.String(64), primary_key=True),
        sa.Column("start", sa.Integer, primary_key=True),
        sa.Column("end", sa.Integer, primary_key=True),
        sa.Column("open_now", sa.Boolean, nullable=False),
        sa.Column("next_open", UTCDateTime(), nullable=True),
        sa.Column("contact_at", UTCDateTime(), nullable=False),
    ]
    for days in periods:
        columns.append(sa.Column(f"lo_{days}", UTCDateTime(), nullable=False))
        columns.append(sa.Column(f"hi_{days}", UTCDateTime(), nullable=False))
        # The last instant before hi (microseconds, as both backends store instants).
        columns.append(sa.Column(f"top_{days}", UTCDateTime(), nullable=False))
    for days in CADENCE_DAYS.values():  # the topic's span, as policy_state keeps it
        columns.append(sa.Column(f"tlo_{days}", sa.String(64), nullable=False))
        columns.append(sa.Column(f"ttop_{days}", sa.String(64), nullable=False))
    return columns


def _topic_key(topic_id: uuid.UUID, instant: dt.datetime) -> str:
    """A contact on a topic as policy_state.counted_topic_at keeps it (migration 0005)."""
    return f"{topic_id} {instant.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S.%f}"


def _window_rows(
    session: Session,
    cid: sa.ColumnElement,
    at: dt.datetime,
    periods: Sequence[int],
    cfg: ConsentSettings,
    topic_id: uuid.UUID,
    *,
    few: bool | None = None,
) -> list[dict[str, Any]]:
    """One row per time zone x contact hours in use (for a large audience, a superset).

    A small audience (a dispatch batch) reads the (zone, hours) of its candidates, in
    one join. For a large one that join would cost a second or two for a million: it
    reads the zones and the hours of everybody, in two plain scans, and takes every
    combination.
    """
    if few is None:
        counted = sa.select(cid).limit(_FEW_CANDIDATES + 1).subquery()
        few = session.scalar(sa.select(sa.func.count()).select_from(counted)) <= _FEW_CANDIDATES
    if few:
        in_use = session.execute(
            sa.select(
                Customer.timezone, ContactPreference.contact_start, ContactPreference.contact_end
            )
            .select_from(Customer)
            .outerjoin(ContactPreference, ContactPreference.customer_id == Customer.id)
            .where(Customer.id.in_(sa.select(cid)))
            .distinct()
        ).all()
        keys = {(zone, _hours(start), _hours(end)) for zone, start, end in in_use}
    else:
        zones = session.scalars(sa.select(Customer.timezone).distinct()).all()
        hours = session.execute(
            sa.select(ContactPreference.contact_start, ContactPreference.contact_end).distinct()
        ).all()
        pairs = {(_NO_HOURS, _NO_HOURS)} | {(_hours(s), _hours(e)) for s, e in hours}
        keys = {(zone, start, end) for zone in zones for start, end in pairs}
    rows = []
    for timezone, start, end in sorted(keys, key=lambda k: (k[0] or "", k[1], k[2])):
        window = contact_window(
            timezone,
            None if start == _NO_HOURS else start,
            None if end == _NO_HOURS else end,
            at,
            cfg,
        )
        contact_at = window.contact_at(at)
        row = {
            "timezone": timezone,
            "start": start,
            "end": end,
            "open_now": window.open_now,
            "next_open": window.next_open,
            "contact_at": contact_at,
        }
        for days in periods:
            row[f"lo_{days}"] = contact_at - dt.timedelta(days=days)
            row[f"hi_{days}"] = contact_at + dt.timedelta(days=days)
            row[f"top_{days}"] = row[f"hi_{days}"] - dt.timedelta(microseconds=1)
        for days in CADENCE_DAYS.values():
            row[f"tlo_{days}"] = _topic_key(topic_id, row[f"lo_{days}"])
            row[f"ttop_{days}"] = _topic_key(topic_id, row[f"top_{days}"])
        rows.append(row)
    return rows


def _hours(value: int | None) -> int:
    """Contact hours as the windows table keys them (NULL stands as _NO_HOURS)."""
    return _NO_HOURS if value is None else value


def _order_columns(message: Message) -> list[sa.Column[Any]]:
    return [
        sa.Column("channel_order", sa.String(40), primary_key=True),
        *(sa.Column(f"o_{i}", sa.String(8), nullable=False) for i in range(len(message.channels))),
    ]


def _order_rows(message: Message, cfg: ConsentSettings) -> list[dict[str, Any]]:
    """Each stored channel order whose effective order is not the default one."""
    default = effective_order((), message.channels, cfg)
    rows = []
    for order in _ALL_ORDERS:
        effective = effective_order(order, message.channels, cfg)
        if effective != default:
            row = {f"o_{i}": channel for i, channel in enumerate(effective)}
            rows.append({"channel_order": ",".join(order), **row})
    return rows


def _suppressed_expr(channel: str, message: Message) -> sa.ColumnElement[bool]:
    query = sa.select(Suppression.address_hmac).where(Suppression.channel == channel)
    if not (channel == "phone" and message.kind == "marketing"):
        query = query.where(Suppression.reason != "phone_opposition")
    column = (
        Customer.postal_hmac if channel == "post" else getattr(Customer, _ADDRESS_HMAC[channel])
    )
    return column.in_(query)


def _no_address_expr(channel: str) -> sa.ColumnElement[bool]:
    if channel == "email":
        return Customer.email.is_(None)
    if channel in ("sms", "phone"):
        return Customer.phone.is_(None)
    return sa.or_(
        Customer.postal_line1.is_(None), Customer.postal_code.is_(None), Customer.city.is_(None)
    )


def _fenced(select: sa.Select, name: str, postgres: bool) -> sa.Subquery:
    """A stage whose columns are computed once per row, however often the next one uses them.

    PostgreSQL would otherwise inline the stage's expressions into every reference.
    A volatile column keeps it from doing so and, unlike ``OFFSET 0`` or a
    materialized CTE, leaves the plan free to run in parallel workers.
    """
    if postgres:
        select = select.add_columns(sa.func.clock_timestamp().label("fence"))
    return select.subquery(name)


@dataclasses.dataclass
class _Choices:
    """Where the audience reads each customer's consents and contact preference.

    On PostgreSQL from their copy in ``policy_state`` (one join); elsewhere from the
    tables themselves (one join per channel, and the preferences).
    """

    frequency: sa.ColumnElement[Any]
    channel_order: sa.ColumnElement[Any]
    contact_start: sa.ColumnElement[Any]
    contact_end: sa.ColumnElement[Any]
    paused_until: sa.ColumnElement[Any]
    status: dict[str, sa.ColumnElement[Any]]
    # policy_state: is the confirmed address the current one; otherwise its HMAC.
    confirmed: dict[str, sa.ColumnElement[Any]] | None
    confirmed_hmac: dict[str, sa.ColumnElement[Any]] | None
    joins: list[tuple[sa.FromClause, Any]]  # (table, ON clause taking the customer id)
    state: Any = None  # the policy_state alias (PostgreSQL)


def _choices(message: Message, postgres: bool) -> _Choices:
    if postgres:
        state = aliased(PolicyState, name="state")
        return _Choices(
            state.frequency,
            state.channel_order,
            state.contact_start,
            state.contact_end,
            state.paused_until,
            {ch: getattr(state, f"{ch}_status") for ch in message.channels},
            {ch: getattr(state, f"{ch}_confirmed") for ch in message.channels},
            None,
            [(state, lambda id_: state.customer_id == id_)],
            state,
        )
    pref = ContactPreference
    consents = {ch: aliased(ChannelConsent, name=f"consent_{ch}") for ch in message.channels}

    def consent_on(channel: str) -> Any:
        consent = consents[channel]
        return lambda id_: sa.and_(consent.customer_id == id_, consent.channel == channel)

    return _Choices(
        pref.frequency,
        pref.channel_order,
        pref.contact_start,
        pref.contact_end,
        pref.paused_until,
        {ch: c.status for ch, c in consents.items()},
        None,
        {ch: c.confirmed_hmac for ch, c in consents.items()},
        [
            (pref.__table__, lambda id_: pref.customer_id == id_),
            *((consents[ch], consent_on(ch)) for ch in message.channels),
        ],
    )


def _audience_query(
    message: Message,
    cid: sa.ColumnElement,
    windows: sa.FromClause,
    orders: sa.FromClause,
    rules: Sequence[_Rule],
    at: dt.datetime,
    cfg: ConsentSettings,
    postgres: bool,
) -> sa.Select:
    marketing = message.kind == "marketing"
    choices = _choices(message, postgres)
    subscription = aliased(TopicSubscription, name="subscription")

    # The addresses whose confirmation is compared in the query (not with policy_state).
    hmacs = {
        _ADDRESS_HMAC[ch]
        for ch in message.channels
        if ch in cfg.confirm_channels and ch in _ADDRESS_HMAC and choices.confirmed is None
    }

    def address_reason(channel: str) -> sa.ColumnElement[str | None]:
        return sa.case(
            (Customer.erased_at.is_not(None), "erased"),
            (_suppressed_expr(channel, message), "suppressed"),
            (_no_address_expr(channel), "unreachable"),
            else_=sa.null(),
        )

    # The candidates' own rules (erased, suppressed, no address), narrow rows only.
    people = _fenced(
        sa.select(
            Customer.id.label("id"),
            Customer.timezone.label("timezone"),
            *(getattr(Customer, name).label(name) for name in sorted(hmacs)),
            *(address_reason(ch).label(f"a_{ch}") for ch in message.channels),
        ).where(Customer.id.in_(sa.select(cid))),
        "people",
        postgres,
    )

    def early_reason(channel: str) -> sa.ColumnElement[str | None]:
        """Rules 1-5: the reason, or NULL when the caps and the quiet hours decide."""
        address = people.c[f"a_{channel}"]
        whens: list[tuple[sa.ColumnElement[bool], Any]] = [(address.is_not(None), address)]
        if channel in cfg.confirm_channels and choices.confirmed is not None:
            confirmed = sa.func.coalesce(choices.confirmed[channel], sa.false())
            whens.append((sa.not_(confirmed), "unreachable"))
        elif channel in cfg.confirm_channels:
            assert choices.confirmed_hmac is not None
            address_hmac = people.c[_ADDRESS_HMAC[channel]]
            confirmed_hmac = choices.confirmed_hmac[channel]
            unreachable = sa.or_(
                confirmed_hmac.is_(None),
                address_hmac.is_(None),
                confirmed_hmac != address_hmac,
            )
            whens.append((unreachable, "unreachable"))
        status = sa.func.coalesce(choices.status[channel], "")
        if cfg.regimes[channel] == "opt_in":
            whens.append((status != "granted", "no_consent"))
        else:
            whens.append((status == "refused", "no_consent"))
        subscription_status = sa.func.coalesce(subscription.status, "")
        if message.topic_regime == "opt_in":
            whens.append((subscription_status != "subscribed", "topic_unsubscribed"))
        else:
            whens.append((subscription_status == "unsubscribed", "topic_unsubscribed"))
        if marketing:
            paused_until = choices.paused_until
            whens.append((sa.and_(paused_until.is_not(None), paused_until > at), "paused"))
        return sa.case(*whens, else_=sa.null())

    window_join = sa.and_(
        windows.c.timezone == people.c.timezone,
        windows.c.start == sa.func.coalesce(choices.contact_start, _NO_HOURS),
        windows.c.end == sa.func.coalesce(choices.contact_end, _NO_HOURS),
    )
    from_ = sa.select(people.c.id).select_from(people)
    for table, on in choices.joins:
        from_ = from_.outerjoin(table, on(people.c.id))
    from_ = (
        # Every customer has exactly one window row; an outer join keeps the planner's
        # row estimate (an inner join on three expressions is guessed at a few rows).
        from_.outerjoin(windows, window_join)
        .outerjoin(orders, orders.c.channel_order == sa.func.coalesce(choices.channel_order, ""))
        .outerjoin(
            subscription,
            sa.and_(
                subscription.customer_id == people.c.id, subscription.topic_id == message.topic_id
            ),
        )
    )

    # The message's channels in the customer's order: from the orders table, or the
    # default order (no row: the default order, or a stored order that is not valid).
    default = effective_order((), message.channels, cfg)
    positions = [
        sa.func.coalesce(orders.c[f"o_{i}"], channel).label(f"o_{i}")
        for i, channel in enumerate(default)
    ]
    counted: list[sa.ColumnElement[Any]] = []
    if marketing and postgres:
        own = None
        if message.message_ref is not None:
            own = aliased(ContactLogEntry, name="own")
            from_ = from_.outerjoin(
                own,
                sa.and_(
                    own.customer_id == people.c.id,
                    own.message_ref == message.message_ref,
                    own.kind == "marketing",
                    own.status.in_(COUNTED_STATUSES),
                ),
            )
        counted = _state_counts(message, choices.state, own, subscription.frequency, windows, rules)
    # One narrow row per customer: the wide customer rows stay in this stage.
    early = _fenced(
        from_.with_only_columns(
            people.c.id.label("customer_id"),
            windows.c.open_now.label("open_now"),
            windows.c.next_open.label("next_open"),
            windows.c.contact_at.label("contact_at"),
            sa.func.coalesce(choices.frequency, "any").label("frequency"),
            sa.func.coalesce(subscription.frequency, "any").label("topic_frequency"),
            *positions,
            *(early_reason(ch).label(f"e_{ch}") for ch in message.channels),
            *counted,
        ),
        "early",
        postgres,
    )

    counts: sa.FromClause | None = early if counted else None
    query = sa.select(early.c.customer_id).select_from(early)
    if marketing and not postgres:
        counts = _counts_subquery(message, cid, windows, rules, at, postgres)
        query = query.outerjoin(counts, counts.c.customer_id == early.c.customer_id)

    def reason_for(channel: str) -> sa.ColumnElement[str | None]:
        whens: list[tuple[sa.ColumnElement[bool], Any]] = [
            (early.c[f"e_{channel}"].is_not(None), early.c[f"e_{channel}"])
        ]
        if counts is not None:
            whens.append((_cap_exceeded(channel, counts, early, rules), "frequency_cap"))
        whens.append((sa.not_(early.c.open_now), QUIET_HOURS))
        return sa.case(*whens, else_=sa.null())

    per_channel = _fenced(
        query.with_only_columns(
            early.c.customer_id,
            early.c.next_open,
            early.c.contact_at,
            *(early.c[f"o_{i}"] for i in range(len(default))),
            *(reason_for(ch).label(f"r_{ch}") for ch in message.channels),
        ),
        "per_channel",
        postgres,
    )
    return _choose_channel(per_channel, message, postgres)


def _state_counts(
    message: Message,
    state: Any,
    own: Any,
    topic_frequency: sa.ColumnElement[Any],
    windows: sa.FromClause,
    rules: Sequence[_Rule],
) -> list[sa.ColumnElement[int]]:
    """Per customer, from ``policy_state``: contacts around their contact time, per cap.

    The counted instants are sorted arrays, so a count in (low, high) is two binary
    searches (``width_bucket`` gives how many instants are at or before a bound), and
    every expression is parallel-safe (a subquery per row would keep the stage in the
    leader). The message's own reservation (``own``, send-time re-check) is taken off.
    """

    def within(days: int, column: Any, channel: str | None = None) -> Any:
        low, top = windows.c[f"lo_{days}"], windows.c[f"top_{days}"]
        n = sa.func.coalesce(
            sa.func.width_bucket(top, column) - sa.func.width_bucket(low, column), 0
        )
        if own is not None:
            inside = sa.and_(own.at > low, own.at <= top)
            if channel is not None:
                inside = sa.and_(inside, own.channel == channel)
            n = n - sa.case((inside, 1), else_=0)
        return n

    def on_topic(days: int) -> Any:
        """Only for customers with this cadence for the topic."""
        # "<topic> <instant>" texts in "C" order: this topic's instants are one span.
        low, top = (windows.c[f"{bound}_{days}"].collate("C") for bound in ("tlo", "ttop"))
        column = state.counted_topic_at
        n = sa.func.coalesce(
            sa.func.width_bucket(top, column) - sa.func.width_bucket(low, column), 0
        )
        if own is not None:
            low_at, top_at = windows.c[f"lo_{days}"], windows.c[f"top_{days}"]
            inside = sa.and_(own.at > low_at, own.at <= top_at, own.topic_id == message.topic_id)
            n = n - sa.case((inside, 1), else_=0)
        cadence = next(f for f, d in CADENCE_DAYS.items() if d == days)
        return sa.case((topic_frequency == cadence, n), else_=0)

    every = state.counted_at
    columns = [
        within(7, every).label("all_7"),
        within(30, every).label("all_30"),
        on_topic(7).label("topic_7"),
        on_topic(30).label("topic_30"),
    ]
    for i, rule in enumerate(rules):
        column = getattr(state, f"counted_{rule.channel}_at") if rule.channel else every
        columns.append(within(rule.period_days, column, rule.channel).label(f"rule_{i}"))
    return columns


def _counts_subquery(
    message: Message,
    cid: sa.ColumnElement,
    windows: sa.FromClause,
    rules: Sequence[_Rule],
    at: dt.datetime,
    postgres: bool,
) -> sa.CTE:
    """Per customer: messages sent or reserved around their contact time, per cap.

    Aggregated from ``contact_log`` (SQLite; PostgreSQL reads policy_state instead).
    """
    log = ContactLogEntry
    window_join = sa.and_(
        windows.c.timezone == Customer.timezone,
        windows.c.start == sa.func.coalesce(ContactPreference.contact_start, _NO_HOURS),
        windows.c.end == sa.func.coalesce(ContactPreference.contact_end, _NO_HOURS),
    )

    def within(days: int, *conditions: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        inside = sa.and_(log.at > windows.c[f"lo_{days}"], log.at < windows.c[f"hi_{days}"])
        return sa.func.sum(sa.case((sa.and_(inside, *conditions), 1), else_=0))

    on_topic = log.topic_id == message.topic_id
    columns = [
        log.customer_id.label("customer_id"),
        within(7).label("all_7"),
        within(30).label("all_30"),
        within(7, on_topic).label("topic_7"),
        within(30, on_topic).label("topic_30"),
    ]
    for i, rule in enumerate(rules):
        conditions = [log.channel == rule.channel] if rule.channel else []
        columns.append(within(rule.period_days, *conditions).label(f"rule_{i}"))

    widest = dt.timedelta(days=max(30, *(r.period_days for r in rules)) if rules else 30)
    query = (
        sa.select(*columns)
        .select_from(log)
        .join(Customer, Customer.id == log.customer_id)
        .outerjoin(ContactPreference, ContactPreference.customer_id == log.customer_id)
        .outerjoin(windows, window_join)
        .where(
            log.customer_id.in_(sa.select(cid)),  # IN: a candidate listed twice counts once
            log.kind == "marketing",
            log.status.in_(COUNTED_STATUSES),
            # Constant bounds holding every customer's (a contact time is at most a day
            # and a DST hour after the instant), so the windows join can stay outer.
            log.at > sa.literal(at - widest, UTCDateTime()),
            log.at < sa.literal(at + widest + dt.timedelta(days=2), UTCDateTime()),
        )
        .group_by(log.customer_id)
    )
    if message.message_ref is not None:
        query = query.where(log.message_ref != message.message_ref)
    counts = query.cte("contact_counts")
    return counts.prefix_with("MATERIALIZED") if postgres else counts


def _cap_exceeded(
    channel: str, counts: sa.CTE, early: sa.Subquery, rules: Sequence[_Rule]
) -> sa.ColumnElement[bool]:
    def n(column: str) -> sa.ColumnElement[int]:
        return sa.func.coalesce(counts.c[column], 0)

    frequency, topic_frequency = early.c.frequency, early.c.topic_frequency
    conditions = [
        sa.and_(frequency == "weekly", n("all_7") >= 1),
        sa.and_(frequency == "monthly", n("all_30") >= 1),
        sa.and_(topic_frequency == "weekly", n("topic_7") >= 1),
        sa.and_(topic_frequency == "monthly", n("topic_30") >= 1),
    ]
    for i, rule in enumerate(rules):
        if _rule_applies(rule, channel):
            conditions.append(n(f"rule_{i}") >= rule.max_messages)
    return sa.or_(*conditions)


def _choose_channel(per_channel: sa.Subquery, message: Message, postgres: bool) -> sa.Select:
    """Pick each customer's channel: first in their order that sends or defers."""
    n = len(message.channels)

    def reason_at(i: int) -> sa.ColumnElement[str | None]:
        position = per_channel.c[f"o_{i}"]
        return sa.case(
            *((position == ch, per_channel.c[f"r_{ch}"]) for ch in message.channels),
            else_=sa.null(),
        )

    # The reason of the channel at each position of the customer's order.
    staged = _fenced(
        sa.select(
            per_channel.c.customer_id,
            per_channel.c.next_open,
            per_channel.c.contact_at,
            *(per_channel.c[f"o_{i}"] for i in range(n)),
            *(reason_at(i).label(f"p_{i}") for i in range(n)),
        ),
        "staged",
        postgres,
    )

    def passes(i: int) -> sa.ColumnElement[bool]:
        reason = staged.c[f"p_{i}"]
        return sa.or_(reason.is_(None), reason == QUIET_HOURS)

    # The first position that passes; when none does, the first position's skip.
    channel = sa.case(*((passes(i), staged.c[f"o_{i}"]) for i in range(n)), else_=staged.c.o_0)
    reason = sa.case(*((passes(i), staged.c[f"p_{i}"]) for i in range(n)), else_=staged.c.p_0)
    decision = sa.case((reason.is_(None), SEND), (reason == QUIET_HOURS, DEFER), else_=SKIP)
    until = sa.case((reason == QUIET_HOURS, staged.c.next_open), else_=sa.null())
    contact_at = sa.case(
        (sa.or_(reason.is_(None), reason == QUIET_HOURS), staged.c.contact_at), else_=sa.null()
    )
    return sa.select(
        staged.c.customer_id.label("customer_id"),
        channel.label("channel"),
        decision.label("decision"),
        reason.label("reason"),
        until.label("until"),
        contact_at.label("contact_at"),
    )
