"""Deliveries -> messages: queue what is due, re-check the policy, render, send.

Every status change is a compare-and-set on the delivery row, so running an actor
twice, or two workers picking the same ids, sends nothing twice: only a delivery
still ``queued`` is sent, and on PostgreSQL the rows being sent are locked (others
skip them). The policy is asked again at send time: an opt-out written after
planning wins.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from prefcenter import policy
from prefcenter.consent_settings import ConsentSettings
from prefcenter.db import array_literal, mark_changed, set_local
from prefcenter.errors import InvalidInput
from prefcenter.i18n import _, translate
from prefcenter.models import ContactLogEntry, Customer, Topic, utcnow
from prefcenter.portal.links import portal_token, unsubscribe_token

from . import inbound, planner, rendering
from .channels import Outgoing, Sent, Transport
from .channels.outbox import OutboxTransport
from .channels.sms import sms_length
from .models import Campaign, Delivery

WAITING = ("planned", "deferred")
_BATCH_SETTINGS = {"max_parallel_workers_per_gather": "0", "random_page_cost": "1.1"}


@dataclasses.dataclass(frozen=True)
class Links:
    """Signed links every message carries: the portal and one-click unsubscribe."""

    base_url: str
    secret: str
    portal_hours: int = 24 * 30
    unsubscribe_days: int = 180
    unsubscribe_mailto: str | None = None

    def portal(self, customer_id: uuid.UUID, now: dt.datetime) -> str:
        token = portal_token(self.secret, customer_id, hours=self.portal_hours, now=now)
        return f"{self.base_url.rstrip('/')}/p/{token}"

    def unsubscribe(self, customer_id: uuid.UUID, topic_key: str, now: dt.datetime) -> str:
        token = unsubscribe_token(
            self.secret, customer_id, topic_key, days=self.unsubscribe_days, now=now
        )
        return f"{self.base_url.rstrip('/')}/u/{token}"


@dataclasses.dataclass(frozen=True)
class Dispatcher:
    """What sending needs besides a session: consent settings, links, one transport per channel."""

    cfg: ConsentSettings
    links: Links
    transports: Mapping[str, Transport]


@dataclasses.dataclass
class DispatchResult:
    sent: int = 0
    skipped: int = 0
    deferred: int = 0
    failed: int = 0
    requeued: int = 0


def queue_due(session: Session, now: dt.datetime, *, limit: int = 1000) -> list[uuid.UUID]:
    """Mark up to ``limit`` due deliveries of running campaigns ``queued``; return their ids.

    A campaign with ``throttle_per_minute`` gets no more queued than that in any rolling
    minute. The caller enqueues the ids after its transaction commits (never before: a
    rolled-back transaction must not leave broker messages behind).
    """
    throttled = dict(
        session.execute(
            sa.select(Campaign.id, Campaign.throttle_per_minute).where(
                Campaign.status == "running", Campaign.throttle_per_minute.is_not(None)
            )
        ).all()
    )

    def due(*conditions: sa.ColumnElement[bool], room: int) -> list[uuid.UUID]:
        return list(
            session.scalars(
                sa.select(Delivery.id)
                .join(Campaign, Campaign.id == Delivery.campaign_id)
                .where(
                    Campaign.status == "running",
                    Delivery.status.in_(WAITING),
                    Delivery.scheduled_at <= now,
                    *conditions,
                )
                .order_by(Delivery.scheduled_at)
                .limit(room)
            )
        )

    chosen = due(Campaign.id.not_in(list(throttled)) if throttled else sa.true(), room=limit)
    for campaign_id, per_minute in throttled.items():
        recent = session.scalar(
            sa.select(sa.func.count()).where(
                Delivery.campaign_id == campaign_id,
                Delivery.queued_at > now - dt.timedelta(minutes=1),
            )
        )
        room = min(per_minute - (recent or 0), limit - len(chosen))
        if room > 0:
            chosen += due(Delivery.campaign_id == campaign_id, room=room)
    if not chosen:
        return []
    queued: list[uuid.UUID] = []
    for chunk in _chunks(chosen):
        queued += session.scalars(
            sa.update(Delivery)
            .where(Delivery.id.in_(chunk), Delivery.status.in_(WAITING))
            .values(status="queued", queued_at=now, updated_at=now)
            .returning(Delivery.id)
        ).all()
    return queued


def requeue_stuck(
    session: Session, now: dt.datetime, *, older_than: dt.timedelta
) -> list[uuid.UUID]:
    """Deliveries left ``queued`` too long (a lost broker message): their ids to enqueue again."""
    stuck = session.scalars(
        sa.update(Delivery)
        .where(Delivery.status == "queued", Delivery.queued_at < now - older_than)
        .values(queued_at=now, updated_at=now)
        .returning(Delivery.id)
    ).all()
    return list(stuck)


_CUSTOMER_COLUMNS = (  # and the id (see _id_text), and the attributes when used
    Customer.first_name,
    Customer.last_name,
    Customer.locale,
)
_POSTAL_COLUMNS = (
    Customer.postal_line1,
    Customer.postal_line2,
    Customer.postal_code,
    Customer.city,
    Customer.country,
)
# What _address reads, per channel.
_ADDRESS_COLUMNS: dict[str, tuple[Any, ...]] = {
    "email": (Customer.email,),
    "sms": (Customer.phone,),
    "phone": (Customer.phone,),
    "post": _POSTAL_COLUMNS,
}


def _address(customer: Customer | sa.Row, channel: str) -> str | None:
    if channel == "email":
        return customer.email
    if channel in ("sms", "phone"):
        return customer.phone
    lines = [
        customer.postal_line1,
        customer.postal_line2,
        " ".join(p for p in (customer.postal_code, customer.city) if p),
        customer.country,
    ]
    return "\n".join(line for line in lines if line) or None


def _uses_attributes(content: Mapping[str, Any], channel: str) -> bool:
    """Whether any locale of ``channel``'s content reads the customer's attributes."""
    return any(
        "attributes" in rendering.variant(content, channel, locale).names
        for locale in content.get(channel) or {}
    )


def _attributes(customer: Customer | sa.Row) -> Any:
    """The customer's attributes; None from a row read without them (content that does not
    use them: a lookup, where ``getattr`` with a default raised and caught an error for
    each message)."""
    if isinstance(customer, sa.Row):
        return customer._mapping.get("attributes")
    return customer.attributes


def _context(customer: Customer | sa.Row, portal_url: str, unsubscribe_url: str) -> dict:
    return {
        "first_name": customer.first_name or "",
        "last_name": customer.last_name or "",
        "attributes": dict(_attributes(customer) or {}),
        "portal_url": portal_url,
        "unsubscribe_url": unsubscribe_url,
    }


def build_message(
    delivery: _DeliveryView,
    campaign: Campaign,
    topic: Topic,
    customer: Customer | sa.Row,
    links: Links,
    now: dt.datetime,
) -> Outgoing:
    """The message for one delivery, rendered in the customer's language.

    Content made of plain outputs of the customer's fields is rendered once per locale
    (rendering.Shared) and the message carries its values as substitutions too; any
    other content is rendered by Jinja for this customer. A signed link is made only
    when the message uses it.
    """
    channel = delivery.channel
    variant = rendering.variant(campaign.content, channel, customer.locale)
    names = variant.names
    portal_url = links.portal(customer.id, now) if "portal_url" in names else ""
    needs_unsubscribe = channel in ("email", "sms") or "unsubscribe_url" in names
    unsubscribe_url = links.unsubscribe(customer.id, topic.key, now) if needs_unsubscribe else ""
    context = _context(customer, portal_url, unsubscribe_url)
    shared = variant.shared
    substitutions = shared.substitutions(context) if shared is not None else None
    if shared is not None and substitutions is not None:
        parts = {part: shared.fill(part, substitutions) for part in shared.parts}
    else:
        shared = None
        parts = rendering.render(campaign.content, channel, customer.locale, context).parts
    marketing = campaign.kind == "marketing"
    headers: dict[str, str] = {}
    text = parts.get("text") or parts.get("script") or ""
    if channel == "email":
        targets = [f"<{unsubscribe_url}>"]
        if links.unsubscribe_mailto:
            # quote(f"unsubscribe {id}"), spelt out: a UUID has nothing else to escape
            subject = inbound.mailto_subject(delivery.id)
            targets.append(f"<mailto:{links.unsubscribe_mailto}?subject={subject}>")
        headers["List-Unsubscribe"] = ", ".join(targets)
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    elif channel == "sms":
        if marketing:
            stop = translate(_("STOP: ${url}"), variant.locale, {"url": unsubscribe_url})
            text = f"{text}\n{stop}"
        length = sms_length(text)
        headers["X-SMS-Encoding"] = length.encoding
        headers["X-SMS-Segments"] = str(length.segments)
        shared = None  # the STOP mention is not part of the shared text
    return Outgoing(
        delivery_id=delivery.id,
        channel=channel,
        to=_address(customer, channel) or "",
        subject=parts.get("subject"),
        text=text,
        html=parts.get("html"),
        headers=headers,
        categories=_categories(campaign.id, topic.key),
        shared=None if shared is None else shared.body,
        substitutions=substitutions if shared is not None else None,
    )


@functools.lru_cache(maxsize=256)
def _categories(campaign_id: uuid.UUID, topic_key: str) -> tuple[str, ...]:
    return (f"campaign:{campaign_id}", f"topic:{topic_key}")


@dataclasses.dataclass
class Prepared:
    """Messages ready for their transports, after the policy said yes."""

    result: DispatchResult
    # channel -> [(delivery id, customer id, message_ref, message)]
    outgoing: dict[str, list[tuple[uuid.UUID, uuid.UUID, str, Outgoing]]]


def prepare(
    session: Session,
    delivery_ids: Sequence[uuid.UUID | str],
    now: dt.datetime,
    dispatcher: Dispatcher,
) -> Prepared:
    """Ask the policy again for the deliveries still ``queued``, and render what may go.

    The re-check is the policy's set-based form, one query per campaign and channel in
    the batch. The deliveries that may go stay ``sending`` when this transaction commits,
    so no other worker (and no redelivered message) sends them again. Every statement
    takes the batch's ids as one array on PostgreSQL (short SQL, one parameter).
    """
    result = DispatchResult()
    if not delivery_ids:
        return Prepared(result, {})
    if session.get_bind().dialect.name == "postgresql":
        # A batch touches a thousand rows: index lookups, not (parallel) scans of the
        # customer tables, which PostgreSQL's defaults (random_page_cost 4, meant for
        # spinning disks) otherwise pick for the policy's re-check. This transaction only.
        set_local(session, _BATCH_SETTINGS)
    # The claim is a compare-and-set to ``sending``: a second worker given the same ids
    # waits for this transaction (row locks), then finds them no longer queued.
    rows = _write(
        session,
        sa.update(Delivery)
        .where(_among(session, Delivery.id, delivery_ids), Delivery.status == "queued")
        .values(status="sending", attempts=Delivery.attempts + 1, updated_at=now)
        .returning(
            _id_text(session, Delivery.id, "id"),
            _id_text(session, Delivery.customer_id, "customer_id"),
            Delivery.channel,
            Delivery.campaign_id,
        ),
    ).all()
    outgoing: dict[str, list[tuple[uuid.UUID, uuid.UUID, str, Outgoing]]] = {}
    if not rows:
        return Prepared(result, outgoing)

    groups: dict[tuple[uuid.UUID, str], list[Any]] = {}
    for row in rows:
        groups.setdefault((row.campaign_id, row.channel), []).append(row)
    campaigns: dict[uuid.UUID, Campaign] = {}
    topics: dict[uuid.UUID, Topic] = {}
    for campaign, topic in session.execute(
        sa.select(Campaign, Topic)
        .join(Topic, Topic.id == Campaign.topic_id)
        .where(Campaign.id.in_({r.campaign_id for r in rows}))
    ):
        campaigns[campaign.id], topics[topic.id] = campaign, topic
    sendable: list[tuple[Any, Campaign, Topic]] = []
    for (campaign_id, channel), members in groups.items():
        campaign = campaigns[campaign_id]
        ids = [m.id for m in members]
        customer_ids = [m.customer_id for m in members]
        if campaign.status == "paused":
            _set_status(session, ids, now, status="planned")  # back in line; resume sends it
            result.requeued += len(ids)
            continue
        if campaign.status == "cancelled":
            _set_status(session, ids, now, status="cancelled")
            _release(session, campaign.message_ref, customer_ids, now)
            continue
        topic = topics[campaign.topic_id]
        message = policy.Message(
            topic.id, topic.regime, campaign.kind, (channel,), campaign.message_ref
        )
        candidates = sa.select(Customer.id).where(_among(session, Customer.id, customer_ids))
        with policy.audience(
            session, message, candidates, now, cfg=dispatcher.cfg, few=True
        ) as audience:
            decided = audience.query.subquery("decided")
            # Core rows (session.connection()): the ORM's row handling is not needed here.
            decisions = {
                d.customer_id: d
                for d in session.connection().execute(
                    sa.select(
                        _id_text(session, decided.c.customer_id, "customer_id"),
                        decided.c.decision,
                        decided.c.reason,
                        decided.c.until,
                    )
                )
            }
        skipped: dict[str, list[Any]] = {}
        deferred: dict[tuple[str, dt.datetime], list[Any]] = {}
        for member in members:
            decision = decisions[member.customer_id]
            if decision.decision == policy.SKIP:
                skipped.setdefault(decision.reason, []).append(member)
            elif decision.decision == policy.DEFER:
                deferred.setdefault((decision.reason, decision.until), []).append(member)
            else:
                sendable.append((member, campaign, topic))
        for reason, skips in skipped.items():
            _set_status(session, [m.id for m in skips], now, status="skipped", reason=reason)
            _release(session, campaign.message_ref, [m.customer_id for m in skips], now)
            result.skipped += len(skips)
        # Grouped by the window's opening: a statement per distinct time, not per delivery.
        for (reason, until), defers in deferred.items():
            _set_status(
                session,
                [m.id for m in defers],
                now,
                status="deferred",
                reason=reason,
                scheduled_at=until,
            )
            _move_reservations(
                session, campaign.message_ref, [m.customer_id for m in defers], until
            )
            result.deferred += len(defers)

    # Plain rows (not ORM objects): rendering reads a few columns of many customers.
    channels = {member.channel for member, _c, _t in sendable}
    uses_attributes = any(
        _uses_attributes(c.content, ch) for ch, c in {(m.channel, c) for m, c, _t in sendable}
    )
    columns = [
        _id_text(session, Customer.id, "id"),
        *_CUSTOMER_COLUMNS,
        *((Customer.attributes,) if uses_attributes else ()),  # JSON: decoded per row
        *{c for ch in channels for c in _ADDRESS_COLUMNS[ch]},
    ]
    customers = {
        c.id: c
        for c in session.connection().execute(
            sa.select(*columns).where(
                _among(session, Customer.id, [m.customer_id for m, _c, _t in sendable])
            )
        )
    }
    no_content: dict[str, list[Any]] = {}
    for member, campaign, topic in sendable:
        delivery = _DeliveryView(member.id, member.channel)
        try:
            message = build_message(
                delivery, campaign, topic, customers[member.customer_id], dispatcher.links, now
            )
        except KeyError:
            no_content.setdefault(campaign.message_ref, []).append(member)
            continue
        outgoing.setdefault(member.channel, []).append(
            (member.id, member.customer_id, campaign.message_ref, message)
        )
    for message_ref, members in no_content.items():
        for channel in {m.channel for m in members}:
            failing = [m for m in members if m.channel == channel]
            _set_status(
                session,
                [m.id for m in failing],
                now,
                status="failed",
                last_error=f"no {channel} content",
            )
            _release(session, message_ref, [m.customer_id for m in failing], now)
            result.failed += len(failing)
    return Prepared(result, outgoing)


@dataclasses.dataclass(frozen=True)
class _DeliveryView:
    """What rendering needs of a delivery (the row itself is never loaded as an object)."""

    id: uuid.UUID | str
    channel: str


def _id_text(session: Session, column: Any, name: str) -> sa.ColumnElement[Any]:
    """An id column read as its text on PostgreSQL: a batch's ids are written into links,
    arrays and provider calls several times each, which a UUID object would format anew
    every time. (SQLite keeps UUID objects, which its bound parameters need.)"""
    if session.get_bind().dialect.name == "postgresql":
        return sa.cast(column, sa.Text).label(name)
    return column.label(name)


def _write(session: Session, statement: Any) -> sa.CursorResult[Any]:
    """A Core write on the session's connection (no ORM objects involved, none of the
    ORM's per-row work), which the unit of work is told to commit."""
    result = session.connection().execute(statement)
    mark_changed(session)
    return result


def _chunks(ids: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def _among(
    session: Session, column: sa.ColumnElement[uuid.UUID], ids: Sequence[uuid.UUID]
) -> sa.ColumnElement[bool]:
    """``column IN ids``: on PostgreSQL ``= ANY(array)``, one parameter however many
    (:func:`prefcenter.db.array_literal`)."""
    if session.get_bind().dialect.name == "postgresql":
        return column == sa.any_(array_literal(ids, sa.Uuid()))
    return column.in_([i if isinstance(i, uuid.UUID) else uuid.UUID(i) for i in ids])


def _chunked(session: Session, ids: Sequence[Any]) -> Iterator[Sequence[Any]]:
    """The ids in one piece on PostgreSQL (an array), in pieces elsewhere (bound parameters)."""
    if session.get_bind().dialect.name == "postgresql":
        yield ids
    else:
        yield from _chunks(ids)


def _set_status(
    session: Session, ids: Sequence[uuid.UUID], now: dt.datetime, **values: Any
) -> None:
    for chunk in _chunked(session, ids):  # Core statements: no ORM objects are involved
        _write(
            session,
            sa.update(Delivery)
            .where(_among(session, Delivery.id, chunk))
            .values(updated_at=now, **values),
        )


def _release(
    session: Session, message_ref: str, customer_ids: Sequence[uuid.UUID], now: dt.datetime
) -> None:
    """These reservations will not be sent: they stop counting toward caps."""
    _settle(session, message_ref, customer_ids, status="released", updated_at=now)


def _mark_sent(
    session: Session, message_ref: str, customer_ids: Sequence[uuid.UUID], now: dt.datetime
) -> None:
    """These reservations went out: they keep counting, at the time they were sent."""
    _settle(session, message_ref, customer_ids, status="sent", at=now, updated_at=now)


def _move_reservations(
    session: Session, message_ref: str, customer_ids: Sequence[uuid.UUID], at: dt.datetime | None
) -> None:
    """These reservations now count at ``at`` (the message goes later)."""
    _settle(session, message_ref, customer_ids, at=at, updated_at=utcnow())


def _settle(
    session: Session, message_ref: str, customer_ids: Sequence[uuid.UUID], **values: Any
) -> None:
    for chunk in _chunked(session, customer_ids):
        _write(
            session,
            sa.update(ContactLogEntry)
            .where(
                ContactLogEntry.message_ref == message_ref,
                _among(session, ContactLogEntry.customer_id, chunk),
                ContactLogEntry.status == "reserved",
            )
            .values(**values),
        )


def transmit(
    session: Session | None, prepared: Prepared, dispatcher: Dispatcher, *, in_database: bool
) -> dict[uuid.UUID, Sent]:
    """Hand the prepared messages of one kind of transport over (database or provider)."""
    answers: dict[uuid.UUID, Sent] = {}
    for channel, batch in prepared.outgoing.items():
        transport = dispatcher.transports[channel]
        if transport.in_database != in_database:
            continue
        for answer in transport.send(session, [entry[-1] for entry in batch]):
            answers[answer.delivery_id] = answer
    return answers


def record(
    session: Session,
    prepared: Prepared,
    answers: Mapping[uuid.UUID, Sent],
    now: dt.datetime,
) -> DispatchResult:
    """Write what the transports answered: sent, failed, or back in line for later.

    Set-based: one UPDATE per kind of answer (a provider call answers with one message
    id for its whole batch), not one per delivery.
    """
    result = prepared.result
    sent: dict[tuple[str, str | None], list[tuple[uuid.UUID, uuid.UUID]]] = {}
    failed: dict[tuple[str, str | None], list[tuple[uuid.UUID, uuid.UUID]]] = {}
    retried: dict[tuple[str, float], list[tuple[uuid.UUID, uuid.UUID]]] = {}
    for batch in prepared.outgoing.values():
        for delivery_id, customer_id, message_ref, _message in batch:
            answer = answers.get(delivery_id)
            if answer is None:
                continue
            pair = (delivery_id, customer_id)
            if answer.ok:
                sent.setdefault((message_ref, answer.provider_message_id), []).append(pair)
            elif answer.retry_after is not None:
                retried.setdefault((message_ref, answer.retry_after), []).append(pair)
            else:
                failed.setdefault((message_ref, answer.error), []).append(pair)
    for (message_ref, provider_id), pairs in sent.items():
        _set_status(
            session,
            [d for d, _c in pairs],
            now,
            status="sent",
            sent_at=now,
            provider_message_id=provider_id,
        )
        _mark_sent(session, message_ref, [c for _d, c in pairs], now)
        result.sent += len(pairs)
    for (message_ref, retry_after), pairs in retried.items():
        later = now + dt.timedelta(seconds=retry_after)
        _set_status(session, [d for d, _c in pairs], now, status="planned", scheduled_at=later)
        _move_reservations(session, message_ref, [c for _d, c in pairs], later)
        result.requeued += len(pairs)
    for (message_ref, error), pairs in failed.items():
        _set_status(session, [d for d, _c in pairs], now, status="failed", last_error=error)
        _release(session, message_ref, [c for _d, c in pairs], now)
        result.failed += len(pairs)
    return result


def send_deliveries(
    session: Session,
    delivery_ids: Sequence[uuid.UUID | str],
    now: dt.datetime,
    dispatcher: Dispatcher,
) -> DispatchResult:
    """Prepare, send and record in one session (the outbox; tests of provider answers)."""
    prepared = prepare(session, delivery_ids, now, dispatcher)
    answers = dict(transmit(session, prepared, dispatcher, in_database=True))
    answers |= transmit(None, prepared, dispatcher, in_database=False)
    return record(session, prepared, answers, now)


def dispatch_in_steps(
    unit_of_work: Callable[[], AbstractContextManager[Session]],
    delivery_ids: Sequence[uuid.UUID | str],
    now: dt.datetime,
    dispatcher: Dispatcher,
) -> DispatchResult:
    """The worker's way: commit ``sending`` before any provider call, record after it.

    A worker killed during the provider call leaves those deliveries ``sending``: never
    sent twice; :func:`flag_unconfirmed` reports them after a while (the provider's
    events, when they arrive, move them on).
    """
    with unit_of_work() as session:
        prepared = prepare(session, delivery_ids, now, dispatcher)
        answers = dict(transmit(session, prepared, dispatcher, in_database=True))
        record(session, prepared, answers, now)
    remote = transmit(None, prepared, dispatcher, in_database=False)
    if not remote:
        return prepared.result
    with unit_of_work() as session:
        return record(session, prepared, remote, utcnow())


def flag_unconfirmed(session: Session, now: dt.datetime, *, older_than: dt.timedelta) -> int:
    """Deliveries left ``sending`` (the worker stopped during the call): failed, not resent."""
    result = session.execute(
        sa.update(Delivery)
        .where(Delivery.status == "sending", Delivery.updated_at < now - older_than)
        .values(
            status="failed",
            last_error="the worker stopped while the provider was called; not sent again "
            "so that no one receives it twice",
            updated_at=now,
        )
    )
    return result.rowcount


def campaign_counts(session: Session, campaign_id: uuid.UUID) -> dict:
    """Deliveries per status, and skipped per policy reason (the API's ``counts``): at
    send time (deliveries) and at planning (``campaign_exclusions``, no deliveries)."""
    rows = session.execute(
        sa.select(Delivery.status, Delivery.reason, sa.func.count())
        .where(Delivery.campaign_id == campaign_id)
        .group_by(Delivery.status, Delivery.reason)
    ).all()
    counts: dict = {
        s: 0 for s in ("planned", "queued", "sending", "sent", "delivered", "failed", "deferred")
    }
    counts["cancelled"] = 0
    skipped = planner.exclusion_counts(session, campaign_id)
    for status, reason, n in rows:
        if status == "skipped":
            skipped[reason or "unknown"] = skipped.get(reason or "unknown", 0) + n
        else:
            counts[status] = counts.get(status, 0) + n
    counts["skipped"] = dict(sorted(skipped.items()))
    return counts


def preview(
    session: Session,
    campaign: Campaign,
    customer: Customer,
    channel: str,
    links: Links,
    now: dt.datetime,
) -> Outgoing:
    """The message ``customer`` would get on ``channel``, rendered as dispatch would."""
    if channel not in campaign.channels:
        raise InvalidInput.one(
            "channel",
            channel,
            f"is not one of this campaign's channels ({', '.join(campaign.channels)})",
        )
    topic = session.get_one(Topic, campaign.topic_id)
    try:
        return build_message(
            _DeliveryView(uuid.uuid4(), channel), campaign, topic, customer, links, now
        )
    except KeyError:
        raise InvalidInput.one("channel", channel, "has no content in this campaign") from None


def test_send(
    session: Session,
    campaign: Campaign,
    customer: Customer,
    channel: str,
    to: str,
    dispatcher: Dispatcher,
    now: dt.datetime,
) -> Sent:
    """Send the preview for ``customer`` to ``to`` (a marketer's own address): no delivery,
    no reservation, no policy — it is not a message to that customer."""
    message = dataclasses.replace(
        preview(session, campaign, customer, channel, dispatcher.links, now),
        to=to,
        categories=(f"campaign:{campaign.id}", "test-send"),
    )
    transport = dispatcher.transports[channel]
    if isinstance(transport, OutboxTransport):
        return transport.send(session, [message], test=True)[0]
    return transport.send(session, [message])[0]
