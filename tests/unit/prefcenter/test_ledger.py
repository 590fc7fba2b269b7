import datetime as dt

import pytest
import sqlalchemy as sa

from prefcenter.models import ConsentLedgerEntry
from prefcenter.services.ledger import Actor, history, record
from tests.factories import make_customer

T0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)


def _rows(session, customer):
    return session.scalars(
        sa.select(ConsentLedgerEntry).where(ConsentLedgerEntry.customer_id == customer.id)
    ).all()


def test_record_appends_who_what_before_after_and_when(dbsession):
    customer = make_customer(dbsession)
    actor = Actor.customer(customer.id, ip="203.0.113.7", user_agent="Mozilla/5.0")

    entry = record(
        dbsession,
        customer.id,
        actor,
        "frequency",
        "any",
        "weekly",
        details={"via": "portal"},
        now=T0,
    )

    [stored] = _rows(dbsession, customer)
    assert stored is entry
    dbsession.expire(stored)
    assert (stored.field, stored.before, stored.after) == ("frequency", "any", "weekly")
    assert (stored.actor_type, stored.actor_id) == ("customer", str(customer.id))
    assert (stored.ip, stored.user_agent) == ("203.0.113.7", "Mozilla/5.0")
    assert stored.at == T0
    assert stored.details == {"via": "portal"}


def test_values_are_stored_as_text_and_none_stays_null(dbsession):
    customer = make_customer(dbsession)
    system = Actor.system("dormancy")

    record(dbsession, customer.id, system, "paused_until", None, T0, now=T0)
    record(dbsession, customer.id, system, "flag", True, False, now=T0)
    record(dbsession, customer.id, system, "count", 1, None, now=T0)

    assert [(r.field, r.before, r.after) for r in history(dbsession, customer.id)] == [
        ("paused_until", None, "2026-03-01T09:00:00+00:00"),
        ("flag", "true", "false"),
        ("count", "1", None),
    ]


@pytest.mark.parametrize(("before", "after"), [("weekly", "weekly"), (None, None), (1, "1")])
def test_nothing_is_written_when_before_equals_after(dbsession, before, after):
    customer = make_customer(dbsession)

    entry = record(dbsession, customer.id, Actor.system("test"), "frequency", before, after)

    assert entry is None
    assert _rows(dbsession, customer) == []


def test_history_is_ordered_by_time_then_insertion_and_only_for_that_customer(dbsession):
    customer, other = make_customer(dbsession), make_customer(dbsession)
    actor = Actor.marketer("u-1")
    record(dbsession, customer.id, actor, "third", None, "c", now=T0 + dt.timedelta(hours=2))
    record(dbsession, customer.id, actor, "first", None, "a", now=T0)
    record(dbsession, other.id, actor, "other customer", None, "x", now=T0)
    record(dbsession, customer.id, actor, "second", None, "b", now=T0)

    assert [e.field for e in history(dbsession, customer.id)] == ["first", "second", "third"]


def test_each_kind_of_actor_is_recorded_with_its_type_and_id(dbsession):
    customer = make_customer(dbsession)
    actors = [
        Actor.customer(customer.id),
        Actor.api_key("Ab12Cd34", ip="198.51.100.1"),
        Actor.marketer("user-42", user_agent="Firefox"),
        Actor.provider("sendgrid"),
        Actor.system("dormancy"),
    ]
    for n, actor in enumerate(actors):
        record(dbsession, customer.id, actor, f"field{n}", None, "x", now=T0)

    assert [(e.actor_type, e.actor_id) for e in history(dbsession, customer.id)] == [
        ("customer", str(customer.id)),
        ("api_key", "Ab12Cd34"),
        ("marketer", "user-42"),
        ("provider", "sendgrid"),
        ("system", "dormancy"),
    ]


def test_an_oversized_user_agent_is_truncated_rather_than_failing_the_change(dbsession):
    customer = make_customer(dbsession)
    actor = Actor.customer(customer.id, user_agent="A" * 2000)

    record(dbsession, customer.id, actor, "frequency", "any", "monthly", now=T0)

    [entry] = history(dbsession, customer.id)
    assert entry.user_agent == "A" * 500


def test_an_unknown_actor_type_is_refused_when_the_actor_is_made():
    with pytest.raises(ValueError, match="'robot' is not one of"):
        Actor("robot", "r2d2")
