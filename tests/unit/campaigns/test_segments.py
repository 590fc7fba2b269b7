"""Segment rules -> SQL: who is in, on SQLite and PostgreSQL, and what is refused and why."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from campaigns import segments
from campaigns.segments import SegmentError
from prefcenter import policy
from prefcenter.models import Customer, Interaction, TopicSubscription
from tests.factories import make_customer, make_topic
from tests.policy_builders import reachable_customer, settings

AT = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
SECOND = dt.timedelta(seconds=1)


def _case_id(value):
    """Test ids must not depend on set order (pytest-xdist compares them across workers)."""
    if isinstance(value, set | frozenset):
        return "{" + ",".join(sorted(map(str, value))) + "}"
    return str(value)


def person(session, name: str, **fields: Any) -> Customer:
    """A customer known by ``name`` in assertions (kept in ``first_name``)."""
    return make_customer(session, first_name=name, **fields)


def members(session, rule: Any, *customers: Customer, at=AT, **options: Any) -> set[str]:
    """Names of the given customers that the segment selects, used as a subquery."""
    segment = segments.compile_rule(session, rule, at=at, **options)
    query = sa.select(Customer.first_name).where(
        Customer.id.in_([c.id for c in customers]), Customer.id.in_(segment)
    )
    return set(session.scalars(query))


def interact(session, customer: Customer, kind: str, occurred_at: dt.datetime) -> None:
    session.add(
        Interaction(
            customer_id=customer.id,
            kind=kind,
            occurred_at=occurred_at,
            source="test",
            idempotency_key=uuid.uuid4().hex,
        )
    )
    session.flush()


def field(name: str, op: str, value: Any) -> dict[str, Any]:
    return {"field": name, "op": op, "value": value}


def problems(rule: Any, session=None) -> list[tuple[str, Any, str]]:
    with pytest.raises(SegmentError) as caught:
        segments.validate(rule, session=session)
    return [(p.pointer, p.value, p.reason) for p in caught.value.problems]


# --------------------------------------------------------------------------- fields


@pytest.fixture
def locales(dbsession):
    return [
        person(dbsession, "fr", locale="fr", country="FR", timezone="Europe/Paris"),
        person(dbsession, "en", locale="en", country="GB", timezone="Europe/London"),
        person(dbsession, "none", locale="fr", country=None, timezone="America/Cayenne"),
    ]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (field("locale", "eq", "en"), {"en"}),
        (field("locale", "ne", "en"), {"fr", "none"}),
        (field("locale", "in", ["en", "fr"]), {"fr", "en", "none"}),
        (field("locale", "exists", True), {"fr", "en", "none"}),
        (field("locale", "exists", False), set()),
        (field("country", "eq", "FR"), {"fr"}),
        # ne is "not eq": a customer without a country is not in France.
        (field("country", "ne", "FR"), {"en", "none"}),
        (field("country", "in", ["GB", "DE"]), {"en"}),
        (field("country", "exists", True), {"fr", "en"}),
        (field("country", "exists", False), {"none"}),
        (field("country", "gt", "FR"), {"en"}),
        (field("country", "gte", "FR"), {"fr", "en"}),
        (field("country", "lt", "GB"), {"fr"}),
        (field("country", "lte", "GB"), {"fr", "en"}),
        (field("timezone", "eq", "Europe/London"), {"en"}),
        (field("timezone", "in", ["Europe/Paris", "America/Cayenne"]), {"fr", "none"}),
        (field("timezone", "lt", "Europe"), {"none"}),
    ],
    ids=lambda v: _case_id(v) if not isinstance(v, dict) else f"{v['field']}-{v['op']}",
)
def test_customer_fields(dbsession, locales, rule, expected):
    assert members(dbsession, rule, *locales) == expected


def test_not_of_a_condition_is_its_complement_even_without_a_value(dbsession, locales):
    assert members(dbsession, {"not": field("country", "eq", "FR")}, *locales) == {"en", "none"}
    assert members(dbsession, {"not": field("country", "gt", "FR")}, *locales) == {"fr", "none"}


# --------------------------------------------------------------------------- attributes


@pytest.fixture
def ages(dbsession):
    return [
        person(dbsession, "nine", attributes={"age": 9}),
        person(dbsession, "ten", attributes={"age": 10}),
        person(dbsession, "ten-and-a-half", attributes={"age": 10.5}),
        person(dbsession, "text-ten", attributes={"age": "10"}),
        person(dbsession, "text-nine", attributes={"age": "9"}),
        person(dbsession, "null", attributes={"age": None}),
        person(dbsession, "missing", attributes={}),
    ]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # Numbers compare as numbers (9 < 10), never with the texts "9" and "10".
        (field("attributes.age", "gt", 9), {"ten", "ten-and-a-half"}),
        (field("attributes.age", "gte", 10), {"ten", "ten-and-a-half"}),
        (field("attributes.age", "lt", 10), {"nine"}),
        (field("attributes.age", "lte", 10), {"nine", "ten"}),
        (field("attributes.age", "eq", 10), {"ten"}),
        (field("attributes.age", "eq", 10.0), {"ten"}),
        (field("attributes.age", "eq", 10.5), {"ten-and-a-half"}),
        (
            field("attributes.age", "ne", 10),
            {"nine", "ten-and-a-half", "text-ten", "text-nine", "null", "missing"},
        ),
        # Texts compare as texts: "10" < "9".
        (field("attributes.age", "eq", "10"), {"text-ten"}),
        (field("attributes.age", "gt", "10"), {"text-nine"}),
        (field("attributes.age", "lt", "9"), {"text-ten"}),
        (field("attributes.age", "in", [9, "10"]), {"nine", "text-ten"}),
        # JSON null is no value.
        (
            field("attributes.age", "exists", True),
            {"nine", "ten", "ten-and-a-half", "text-ten", "text-nine"},
        ),
        (field("attributes.age", "exists", False), {"null", "missing"}),
    ],
    ids=lambda v: _case_id(v) if not isinstance(v, dict) else f"{v['op']}-{v['value']!r}",
)
def test_attribute_numbers_and_texts(dbsession, ages, rule, expected):
    assert members(dbsession, rule, *ages) == expected


def test_attribute_booleans(dbsession):
    people = [
        person(dbsession, "yes", attributes={"vip": True}),
        person(dbsession, "no", attributes={"vip": False}),
        person(dbsession, "text", attributes={"vip": "true"}),
        person(dbsession, "one", attributes={"vip": 1}),
        person(dbsession, "missing", attributes={}),
    ]
    assert members(dbsession, field("attributes.vip", "eq", True), *people) == {"yes"}
    assert members(dbsession, field("attributes.vip", "eq", False), *people) == {"no"}
    assert members(dbsession, field("attributes.vip", "ne", True), *people) == {
        "no",
        "text",
        "one",
        "missing",
    }
    assert members(dbsession, field("attributes.vip", "in", [True, "true"]), *people) == {
        "yes",
        "text",
    }


def test_attribute_texts_order_by_code_point_on_every_database(dbsession):
    # A language-aware collation would put "a" before "B"; code points put it after.
    people = [
        person(dbsession, "upper", attributes={"code": "B"}),
        person(dbsession, "lower", attributes={"code": "a"}),
        person(dbsession, "accent", attributes={"code": "é"}),
    ]
    assert members(dbsession, field("attributes.code", "gt", "B"), *people) == {"lower", "accent"}
    assert members(dbsession, field("attributes.code", "lt", "a"), *people) == {"upper"}
    assert members(dbsession, field("attributes.code", "gt", "z"), *people) == {"accent"}


def test_attribute_names_with_dashes_and_other_attributes_do_not_mix(dbsession):
    people = [
        person(dbsession, "dash", attributes={"store-id": "42", "store": "7"}),
        person(dbsession, "plain", attributes={"store": "42"}),
    ]
    assert members(dbsession, field("attributes.store-id", "eq", "42"), *people) == {"dash"}
    assert members(dbsession, field("attributes.store", "eq", "42"), *people) == {"plain"}


def test_large_and_negative_numbers(dbsession):
    people = [
        person(dbsession, "big", attributes={"points": 12_345_678_901}),
        person(dbsession, "negative", attributes={"points": -3}),
        person(dbsession, "2**53+1", attributes={"points": 2**53 + 1}),
    ]
    # Exact comparison, not through floating point (where 2**53 + 1 == 2**53).
    assert members(dbsession, field("attributes.points", "gt", float(2**53)), *people) == {
        "2**53+1"
    }
    above = field("attributes.points", "gt", 12_345_678_900)
    assert members(dbsession, above, *people) == {"big", "2**53+1"}
    assert members(dbsession, field("attributes.points", "lt", -2.5), *people) == {"negative"}


# --------------------------------------------------------------------------- last interaction


@pytest.fixture
def recency(dbsession):
    return [
        person(dbsession, "today", last_interaction_at=AT - dt.timedelta(hours=5)),
        person(dbsession, "nine", last_interaction_at=AT - 10 * DAY + SECOND),
        person(dbsession, "ten", last_interaction_at=AT - 10 * DAY),
        person(dbsession, "thirty", last_interaction_at=AT - 30 * DAY - dt.timedelta(hours=1)),
        person(dbsession, "never", last_interaction_at=None),
    ]


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("eq", 10, {"ten"}),
        ("eq", 9, {"nine"}),
        ("eq", 0, {"today"}),
        ("ne", 10, {"today", "nine", "thirty", "never"}),
        ("gt", 10, {"thirty", "never"}),
        ("gte", 10, {"ten", "thirty", "never"}),
        ("gte", 0, {"today", "nine", "ten", "thirty", "never"}),
        ("lt", 10, {"today", "nine"}),
        ("lt", 0, set()),
        ("lte", 10, {"today", "nine", "ten"}),
        ("in", [0, 30], {"today", "thirty"}),
        ("exists", True, {"today", "nine", "ten", "thirty"}),
        ("exists", False, {"never"}),
    ],
)
def test_last_interaction_days(dbsession, recency, op, value, expected):
    rule = {"last_interaction_days": {"op": op, "value": value}}
    assert members(dbsession, rule, *recency) == expected


def test_an_interaction_after_at_counts_as_today(dbsession):
    later = person(dbsession, "later", last_interaction_at=AT + 2 * DAY)
    assert members(dbsession, {"last_interaction_days": {"op": "eq", "value": 0}}, later) == {
        "later"
    }


# --------------------------------------------------------------------------- interaction counts


@pytest.fixture
def shoppers(dbsession):
    two = person(dbsession, "two")
    interact(dbsession, two, "purchase", AT - 5 * DAY)
    interact(dbsession, two, "purchase", AT - 89 * DAY)
    interact(dbsession, two, "purchase", AT - 100 * DAY)  # outside 90 days
    one = person(dbsession, "one")
    interact(dbsession, one, "purchase", AT)  # at `at` counts
    interact(dbsession, one, "purchase", AT - 90 * DAY)  # exactly 90 days ago does not
    interact(dbsession, one, "purchase", AT + SECOND)  # after `at` does not
    none = person(dbsession, "none")
    visitor = person(dbsession, "visitor")
    for days in (1, 2, 3):
        interact(dbsession, visitor, "visit", AT - days * DAY)
    return [two, one, none, visitor]


def purchases(op: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {
        "interactions": {"kind": "purchase", "within_days": 90, "op": op, "value": value, **extra}
    }


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("gte", 2, {"two"}),
        ("gte", 1, {"two", "one"}),
        ("gte", 0, {"two", "one", "none", "visitor"}),
        ("gt", 0, {"two", "one"}),
        ("gt", 1, {"two"}),
        ("eq", 0, {"none", "visitor"}),
        ("eq", 1, {"one"}),
        ("eq", 2, {"two"}),
        ("ne", 0, {"two", "one"}),
        ("ne", 2, {"one", "none", "visitor"}),
        ("lt", 1, {"none", "visitor"}),
        ("lt", 2, {"one", "none", "visitor"}),
        ("lte", 1, {"one", "none", "visitor"}),
        ("lte", 0, {"none", "visitor"}),
        ("in", [0, 2], {"two", "none", "visitor"}),
    ],
)
def test_interaction_counts(dbsession, shoppers, op, value, expected):
    assert members(dbsession, purchases(op, value), *shoppers) == expected


def test_interaction_count_of_any_kind(dbsession, shoppers):
    rule = {"interactions": {"within_days": 90, "op": "gte", "value": 3}}
    assert members(dbsession, rule, *shoppers) == {"visitor"}
    rule = {"interactions": {"within_days": 2, "op": "eq", "value": 1}}
    # visitor: only the visit 1 day ago lies in (at - 2 days, at]; one: the purchase at `at`.
    assert members(dbsession, rule, *shoppers) == {"visitor", "one"}


# --------------------------------------------------------------------------- subscriptions


def subscribe(session, customer: Customer, topic, status: str) -> None:
    session.add(TopicSubscription(customer_id=customer.id, topic_id=topic.id, status=status))
    session.flush()


@pytest.mark.parametrize(
    ("regime", "expected"),
    [("opt_in", {"subscribed"}), ("opt_out", {"subscribed", "no choice"})],
)
def test_subscribed_follows_the_topic_regime(dbsession, regime, expected):
    topic = make_topic(dbsession, regime=regime)
    other = make_topic(dbsession, regime="opt_in")
    subscribed = person(dbsession, "subscribed")
    subscribe(dbsession, subscribed, topic, "subscribed")
    unsubscribed = person(dbsession, "unsubscribed")
    subscribe(dbsession, unsubscribed, topic, "unsubscribed")
    subscribe(dbsession, unsubscribed, other, "subscribed")  # another topic does not count
    no_choice = person(dbsession, "no choice")
    people = (subscribed, unsubscribed, no_choice)
    assert members(dbsession, {"subscribed": topic.key}, *people) == expected
    assert (
        members(dbsession, {"not": {"subscribed": topic.key}}, *people)
        == {
            "subscribed",
            "unsubscribed",
            "no choice",
        }
        - expected
    )


def test_unknown_topic_is_refused_with_a_session(dbsession):
    make_topic(dbsession, key="offers")
    rule = {"any": [{"subscribed": "offers"}, {"subscribed": "ofers"}]}
    segments.validate(rule)  # without a session only the shape is checked
    assert problems(rule, session=dbsession) == [
        ("/any/1/subscribed", "ofers", "There is no topic with the key 'ofers'.")
    ]
    with pytest.raises(SegmentError) as caught:
        segments.compile_rule(dbsession, rule, at=AT)
    assert [p.pointer for p in caught.value.problems] == ["/any/1/subscribed"]


# --------------------------------------------------------------------------- dormancy


@pytest.fixture
def sleepers(dbsession):
    long_ago = AT - 400 * DAY
    return [
        person(dbsession, "exactly 180", last_interaction_at=AT - 180 * DAY, created_at=long_ago),
        person(
            dbsession,
            "180 less a second",
            last_interaction_at=AT - 180 * DAY + SECOND,
            created_at=long_ago,
        ),
        person(dbsession, "active", last_interaction_at=AT - 3 * DAY, created_at=long_ago),
        person(dbsession, "never, old", last_interaction_at=None, created_at=AT - 200 * DAY),
        person(dbsession, "never, new", last_interaction_at=None, created_at=AT - DAY),
    ]


def test_dormant_is_180_days_or_more_without_interaction(dbsession, sleepers):
    assert members(dbsession, {"dormant": True}, *sleepers) == {"exactly 180", "never, old"}
    assert members(dbsession, {"dormant": False}, *sleepers) == {
        "180 less a second",
        "active",
        "never, new",
    }


def test_dormancy_days_is_a_parameter(dbsession, sleepers):
    assert members(dbsession, {"dormant": True}, *sleepers, dormancy_days=2) == {
        "exactly 180",
        "180 less a second",
        "active",
        "never, old",
    }
    assert members(dbsession, {"dormant": True}, *sleepers, dormancy_days=190) == {"never, old"}


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, None])
def test_dormancy_days_must_be_a_positive_whole_number(dbsession, bad):
    with pytest.raises(ValueError, match="dormancy_days"):
        segments.compile_rule(dbsession, {"dormant": True}, at=AT, dormancy_days=bad)


def test_at_must_be_timezone_aware(dbsession):
    with pytest.raises(ValueError, match="timezone-aware"):
        segments.compile_rule(dbsession, {"all": []}, at=dt.datetime(2026, 6, 1))


# --------------------------------------------------------------------------- combinations


@pytest.fixture
def crowd(dbsession):
    return [
        person(dbsession, "fr gold", locale="fr", attributes={"tier": "gold"}),
        person(dbsession, "fr silver", locale="fr", attributes={"tier": "silver"}),
        person(dbsession, "en gold", locale="en", attributes={"tier": "gold"}),
        person(dbsession, "en", locale="en", attributes={}),
    ]


FR = field("locale", "eq", "fr")
GOLD = field("attributes.tier", "eq", "gold")


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"all": [FR, GOLD]}, {"fr gold"}),
        ({"any": [FR, GOLD]}, {"fr gold", "fr silver", "en gold"}),
        ({"not": FR}, {"en gold", "en"}),
        ({"all": [{"not": FR}, {"not": GOLD}]}, {"en"}),
        ({"not": {"any": [FR, GOLD]}}, {"en"}),
        ({"not": {"all": [FR, GOLD]}}, {"fr silver", "en gold", "en"}),
        (
            {"any": [{"all": [FR, {"not": GOLD}]}, {"all": [{"not": FR}, GOLD]}]},
            {"fr silver", "en gold"},
        ),
        ({"not": {"not": FR}}, {"fr gold", "fr silver"}),
        ({"all": [{"all": [{"any": [GOLD]}]}, FR]}, {"fr gold"}),
        ({"all": []}, {"fr gold", "fr silver", "en gold", "en"}),
        ({"any": []}, set()),
        ({"not": {"all": []}}, set()),
        ({"all": [FR, {"all": []}]}, {"fr gold", "fr silver"}),
    ],
)
def test_combinations(dbsession, crowd, rule, expected):
    assert members(dbsession, rule, *crowd) == expected


def test_every_kind_of_condition_together(dbsession):
    topic = make_topic(dbsession, regime="opt_in")
    wanted = person(
        dbsession,
        "wanted",
        country="FR",
        attributes={"points": 500},
        last_interaction_at=AT - 200 * DAY,
    )
    subscribe(dbsession, wanted, topic, "subscribed")
    interact(dbsession, wanted, "purchase", AT - 200 * DAY)
    not_subscribed = person(
        dbsession,
        "not subscribed",
        country="FR",
        attributes={"points": 500},
        last_interaction_at=AT - 200 * DAY,
    )
    rule = {
        "all": [
            field("country", "eq", "FR"),
            field("attributes.points", "gte", 100),
            {"dormant": True},
            {"last_interaction_days": {"op": "gte", "value": 180}},
            {"interactions": {"kind": "purchase", "within_days": 90, "op": "eq", "value": 0}},
            {"subscribed": topic.key},
        ]
    }
    assert members(dbsession, rule, wanted, not_subscribed) == {"wanted"}


# --------------------------------------------------------------------------- erased, count, planner


@pytest.mark.parametrize(
    "rule",
    [{"all": []}, {"not": field("locale", "eq", "en")}, {"dormant": False}, GOLD],
)
def test_erased_customers_are_never_in_a_segment(dbsession, rule):
    kept = person(dbsession, "kept", attributes={"tier": "gold"})
    erased = person(dbsession, "erased", attributes={"tier": "gold"}, erased_at=AT - DAY)
    assert members(dbsession, rule, kept, erased) == {"kept"}


def test_count(dbsession):
    batch = uuid.uuid4().hex
    for n in range(5):
        person(dbsession, f"c{n}", attributes={"batch": batch, "n": n})
    person(dbsession, "erased", attributes={"batch": batch, "n": 9}, erased_at=AT)
    mine = field("attributes.batch", "eq", batch)
    assert segments.count(dbsession, mine, at=AT) == 5
    assert segments.count(dbsession, {"all": [mine, field("attributes.n", "gte", 3)]}, at=AT) == 2
    assert segments.count(dbsession, {"all": [mine, {"any": []}]}, at=AT) == 0


def test_the_segment_is_a_set_of_ids(dbsession):
    a = person(dbsession, "a", attributes={"tier": "gold"})
    query = segments.compile_rule(dbsession, GOLD, at=AT)
    assert isinstance(query, sa.Select)
    assert a.id in set(dbsession.scalars(query))


def test_the_planner_takes_a_segment_as_its_candidates(dbsession):
    topic = make_topic(dbsession)
    gold = reachable_customer(dbsession, topic, attributes={"tier": "gold"})
    reachable_customer(dbsession, topic, attributes={"tier": "silver"})
    candidates = segments.compile_rule(dbsession, GOLD, at=AT)
    message = policy.Message.for_topic(topic, ["email"])
    with policy.audience(dbsession, message, candidates, AT, cfg=settings()) as audience:
        rows = dbsession.execute(audience.query).all()
    # Each test's data is rolled back, so the gold customer is the only candidate.
    assert [(r.customer_id, r.decision) for r in rows] == [(gold.id, policy.SEND)]


# --------------------------------------------------------------------------- validation


ALL_OPS = "eq, ne, in, gt, gte, lt, lte, exists"
COUNT_OPS = "eq, ne, in, gt, gte, lt, lte"


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            {"all": [FR, GOLD, field("locale", "between", "a")]},
            ("/all/2/op", "between", f"The op 'between' is not one of {ALL_OPS}."),
        ),
        (
            [FR],
            (
                "",
                [FR],
                'A rule must be an object such as {"all": [...]} or a condition, not a list.',
            ),
        ),
        (
            {"all": ["locale = fr"]},
            (
                "/all/0",
                "locale = fr",
                'A rule must be an object such as {"all": [...]} or a condition, not text.',
            ),
        ),
        ({"all": FR}, ("/all", FR, '"all" takes a list of rules, not an object.')),
        ({"any": None}, ("/any", None, '"any" takes a list of rules, not null.')),
        (
            {"not": [FR]},
            (
                "/not",
                [FR],
                'A rule must be an object such as {"all": [...]} or a condition, not a list.',
            ),
        ),
        ({}, ("", {}, 'An empty rule means nothing: write {"all": []} for everyone.')),
        (
            {"colour": "blue"},
            (
                "/colour",
                "blue",
                "'colour' is not a kind of rule: use all, any, not, last_interaction_days, "
                "interactions, subscribed, dormant or field.",
            ),
        ),
        (
            {"all": [], "any": []},
            (
                "",
                {"all": [], "any": []},
                "A rule has exactly one kind, but this one has all, any: combine them inside "
                '"all" or "any".',
            ),
        ),
        (
            {**FR, "negate": True},
            ("/negate", True, "'negate' does not belong in a condition: it has field, op, value."),
        ),
        (
            field("email", "eq", "a@example.com"),
            (
                "/field",
                "email",
                "'email' is not a field you can filter on: use locale, timezone, country or "
                "attributes.<name>.",
            ),
        ),
        (
            field("attributes.", "eq", 1),
            (
                "/field",
                "attributes.",
                "'attributes.' is not an attribute name: use 1 to 64 letters, digits, '_' or "
                "'-' after \"attributes.\".",
            ),
        ),
        (
            field("attributes.a.b", "eq", 1),
            (
                "/field",
                "attributes.a.b",
                "'attributes.a.b' is not an attribute name: use 1 to 64 letters, digits, '_' or "
                "'-' after \"attributes.\".",
            ),
        ),
        ({"field": "locale", "value": "fr"}, ("/op", None, '"op" is missing here.')),
        ({"field": "locale", "op": "eq"}, ("/value", None, '"value" is missing here.')),
        (
            field("locale", "in", []),
            ("/value", [], '"in" takes a non-empty list of values, not an empty list.'),
        ),
        (
            field("locale", "in", "fr"),
            ("/value", "fr", "\"in\" takes a non-empty list of values, not 'fr'."),
        ),
        (
            field("locale", "in", ["fr", "de"]),
            ("/value/1", "de", "'de' is not a language we use: fr, en."),
        ),
        (
            field("locale", "exists", "yes"),
            ("/value", "yes", "\"exists\" takes true or false, not 'yes'."),
        ),
        (
            field("country", "eq", "fr"),
            (
                "/value",
                "fr",
                "'fr' is not a two-letter country code in capitals (for example FR).",
            ),
        ),
        (field("country", "eq", 33), ("/value", 33, "This field holds text; 33 is not text.")),
        (
            field("timezone", "eq", "Paris"),
            ("/value", "Paris", "'Paris' is not a time zone we know (for example Europe/Paris)."),
        ),
        (
            field("attributes.tier", "eq", None),
            (
                "/value",
                None,
                "An attribute is compared with a number, a text or true/false, not null.",
            ),
        ),
        (
            field("attributes.tier", "eq", {"a": 1}),
            (
                "/value",
                {"a": 1},
                "An attribute is compared with a number, a text or true/false, not an object.",
            ),
        ),
        (
            field("attributes.vip", "gt", True),
            ("/value", True, "Only a number or a text can be compared in order, not true."),
        ),
        (
            field("attributes.score", "lt", float("nan")),
            ("/value", float("nan"), "Only a number or a text can be compared in order, not nan."),
        ),
        (
            field("attributes.tier", "eq", "x" * 501),
            ("/value", "x" * 501, "Text to compare with is at most 500 characters long."),
        ),
        (
            field("attributes.tier", "in", ["gold", ["silver"]]),
            (
                "/value/1",
                ["silver"],
                "An attribute is compared with a number, a text or true/false, not a list.",
            ),
        ),
        (
            {"last_interaction_days": 30},
            (
                "/last_interaction_days",
                30,
                '"last_interaction_days" takes an object with op, value, not a number.',
            ),
        ),
        (
            {"last_interaction_days": {"op": "gte", "value": -1}},
            (
                "/last_interaction_days/value",
                -1,
                "A number of days must be a whole number from 0 to 36500, not -1.",
            ),
        ),
        (
            {"last_interaction_days": {"op": "gte", "value": 1.5}},
            (
                "/last_interaction_days/value",
                1.5,
                "A number of days must be a whole number from 0 to 36500, not 1.5.",
            ),
        ),
        (
            {"last_interaction_days": {"op": "gte", "value": 30, "unit": "days"}},
            (
                "/last_interaction_days/unit",
                "days",
                "'unit' does not belong in \"last_interaction_days\": it has op, value.",
            ),
        ),
        (
            {"last_interaction_days": {"value": 30}},
            ("/last_interaction_days/op", None, '"op" is missing here.'),
        ),
        (
            {"interactions": {"kind": "purchase", "op": "gte", "value": 2}},
            ("/interactions/within_days", None, '"within_days" is missing here.'),
        ),
        (
            {"interactions": {"kind": "purchase", "within_days": 0, "op": "gte", "value": 2}},
            (
                "/interactions/within_days",
                0,
                '"within_days" must be a whole number of days from 1 to 36500, not 0.',
            ),
        ),
        (
            {"interactions": {"kind": "shopping", "within_days": 90, "op": "gte", "value": 2}},
            (
                "/interactions/kind",
                "shopping",
                "'shopping' is not a kind of interaction: use one of purchase, loyalty_activity, "
                "visit, portal_visit, email_open, email_click, inbound_call, reply, "
                "callback_request.",
            ),
        ),
        (
            {"interactions": {"within_days": 90, "op": "exists", "value": True}},
            ("/interactions/op", "exists", f"The op 'exists' is not one of {COUNT_OPS}."),
        ),
        (
            {"interactions": {"within_days": 90, "op": "gte", "value": "2"}},
            (
                "/interactions/value",
                "2",
                "A number of interactions must be a whole number from 0 to 1000000, not '2'.",
            ),
        ),
        (
            {"interactions": {"within_days": 90, "op": "in", "value": [0, -1]}},
            (
                "/interactions/value/1",
                -1,
                "A number of interactions must be a whole number from 0 to 1000000, not -1.",
            ),
        ),
        (
            {"subscribed": ""},
            ("/subscribed", "", '"subscribed" takes the key of a topic, such as "offers".'),
        ),
        (
            {"subscribed": ["offers"]},
            ("/subscribed", ["offers"], '"subscribed" takes the key of a topic, such as "offers".'),
        ),
        ({"dormant": "yes"}, ("/dormant", "yes", "\"dormant\" takes true or false, not 'yes'.")),
        ({"dormant": 1}, ("/dormant", 1, '"dormant" takes true or false, not 1.')),
        (
            {"all": [{"a/b~c": 1}]},
            (
                "/all/0/a~1b~0c",
                1,
                "'a/b~c' is not a kind of rule: use all, any, not, last_interaction_days, "
                "interactions, subscribed, dormant or field.",
            ),
        ),
    ],
    ids=lambda v: v[0] if isinstance(v, tuple) else None,
)
def test_each_problem_names_where_what_and_why(rule, expected):
    found = problems(rule)
    if expected[1] != expected[1]:  # NaN is not equal to itself
        assert [(p, str(v), r) for p, v, r in found] == [(expected[0], "nan", expected[2])]
        return
    assert found == [expected]


def test_every_problem_is_reported_at_once():
    rule = {
        "all": [
            field("locale", "between", "fr"),
            {"any": [field("country", "eq", "fr"), {"dormant": "no"}]},
            {"colour": "blue"},
            FR,
        ]
    }
    assert [(p, v) for p, v, _reason in problems(rule)] == [
        ("/all/0/op", "between"),
        ("/all/1/any/0/value", "fr"),
        ("/all/1/any/1/dormant", "no"),
        ("/all/2/colour", "blue"),
    ]


def nested(depth: int) -> dict[str, Any]:
    rule: dict[str, Any] = FR
    for _level in range(depth - 1):
        rule = {"not": rule}
    return rule


def test_rules_nest_at_most_ten_levels():
    segments.validate(nested(10))
    (problem,) = problems(nested(11))
    assert problem[0] == "/not" * 10
    assert problem[2] == "Rules can be nested at most 10 levels deep; simplify this part."
    # Deeper still is one problem, not one per level.
    assert len(problems(nested(50))) == 1


def test_a_segment_holds_at_most_200_conditions():
    segments.validate({"all": [FR] * 200})
    assert problems({"any": [FR] * 150 + [{"all": [GOLD] * 51}]}) == [
        ("", 201, "A segment can have at most 200 conditions; this one has 201.")
    ]


def test_the_too_many_conditions_problem_is_never_cut_off():
    found = problems({"all": [field("locale", "eq", "de")] * 300})
    assert found[0] == ("", 300, "A segment can have at most 200 conditions; this one has 300.")
    assert len(found) == segments.MAX_PROBLEMS


def test_a_segment_error_is_a_value_error_and_an_invalid_input():
    from prefcenter.errors import InvalidInput

    with pytest.raises(SegmentError) as caught:
        segments.validate({"dormant": "yes"})
    error = caught.value
    assert isinstance(error, ValueError)
    assert isinstance(error, InvalidInput)
    assert error.errors[0].as_dict() == {
        "field": "/dormant",
        "value": "yes",
        "reason": "\"dormant\" takes true or false, not 'yes'.",
        "code": "not_a_boolean",
    }
    assert str(error) == "/dormant: \"dormant\" takes true or false, not 'yes'."


def test_problem_sentences_are_babel_messages():
    with pytest.raises(SegmentError) as caught:
        segments.validate({"all": [field("locale", "between", "fr")]})
    (problem,) = caught.value.problems
    assert problem.message.domain == "prefcenter"
    assert problem.message == "The op ${value} is not one of ${ops}."  # the msgid
    assert problem.message.mapping == {"value": "'between'", "ops": ALL_OPS}
    assert caught.value.messages("en") == [problem.reason]
    french = "L\u2019opérateur 'between' n\u2019est pas l\u2019un de"
    assert caught.value.messages("fr") == [f"{french} {ALL_OPS}."]


def test_valid_rules_pass():
    for rule in [
        {"all": []},
        {"any": []},
        FR,
        field("attributes.age", "in", [1, 2.5, "three", True]),
        field("country", "exists", False),
        {"last_interaction_days": {"op": "exists", "value": True}},
        {"interactions": {"within_days": 1, "op": "eq", "value": 0}},
        {"subscribed": "offers"},
        {"dormant": False},
    ]:
        segments.validate(rule)


@pytest.fixture
def statements(connection):
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    sa.event.listen(connection, "before_cursor_execute", record)
    yield seen
    sa.event.remove(connection, "before_cursor_execute", record)


def test_bad_input_raises_before_touching_the_database(dbsession, statements):
    bad = {"all": [{"subscribed": "offers"}, field("locale", "between", "fr")]}
    with pytest.raises(SegmentError):
        segments.compile_rule(dbsession, bad, at=AT)
    with pytest.raises(SegmentError):
        segments.count(dbsession, bad, at=AT)
    assert statements == []
    segments.count(dbsession, FR, at=AT)
    assert statements  # the listener does see the queries a valid rule makes
