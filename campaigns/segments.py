"""Segment rules (JSON) -> SQL: who is in a segment, validated with clear errors.

A rule is a JSON object, one of::

    {"all": [rule, ...]}          every rule holds ({"all": []} is everyone)
    {"any": [rule, ...]}          at least one holds ({"any": []} is no one)
    {"not": rule}
    {"field": F, "op": OP, "value": V}
    {"last_interaction_days": {"op": OP, "value": n}}
    {"interactions": {"kind": K, "within_days": n, "op": OP, "value": count}}
    {"subscribed": "<topic key>"}
    {"dormant": true | false}

``OP`` is one of eq, ne, in, gt, gte, lt, lte, exists (``in`` takes a non-empty list,
``exists`` takes true/false; interaction counts have no ``exists``).

Semantics (every condition is true or false for every customer, never "unknown",
so ``not`` always means the complement):

* **Erased customers** (``erased_at`` set) are never in a segment.
* **Fields**: ``locale``, ``timezone``, ``country`` (postal country, ISO code in
  capitals) and ``attributes.<name>`` (the customer's free JSON attributes). A
  number is compared only with JSON numbers (numerically: ``9 < 10``), a string only
  with JSON strings (by code point, the same on SQLite and PostgreSQL), true/false
  only with JSON booleans; so ``{"op": "eq", "value": 42}`` does not match the string
  ``"42"``. A missing (or JSON null) value matches no comparison; ``ne`` is exactly
  ``not eq``, so it matches customers without the value, and ``exists: false`` matches
  only them.
* **last_interaction_days** is the number of whole days since
  ``customers.last_interaction_at`` (0 for an interaction less than 24 hours before
  ``at``, or after it). A customer who never interacted counts as infinitely long
  ago: ``gt``/``gte`` match, ``eq``/``in``/``lt``/``lte`` do not, ``ne`` does;
  ``exists: true`` means "has interacted at least once".
* **interactions** counts the customer's interactions of ``kind`` (any kind when
  ``kind`` is left out) that occurred in ``(at - within_days, at]``: one exactly
  ``within_days`` ago is outside, the same boundary as dormancy. A count of 0 works
  like any other (``eq 0`` = none in that window).
* **subscribed** follows the topic's regime, as the contact policy does: an opt-in
  topic needs a ``subscribed`` row, an opt-out topic counts until ``unsubscribed``.
  An unknown topic key is an error.
* **dormant**: no inbound interaction for ``dormancy_days`` (default 180), i.e. the
  last interaction — or, for a customer who never interacted, the day they were
  created, so a new customer is not dormant — is ``dormancy_days`` or more before
  ``at``. Exactly 180 days ago is dormant; 180 days minus one second is not.

Values: ``eq``/``ne``/``in`` on locale, timezone and country take a real locale (fr,
en), IANA time zone or country code, so a typo is an error rather than an empty
segment; ``gt``/``lt``... take any text there. Numbers of days and counts are whole
numbers. Limits: rules nest at most :data:`MAX_DEPTH` levels and hold at most
:data:`MAX_CONDITIONS` conditions, an ``in`` list at most :data:`MAX_LIST_VALUES`
values; unknown keys are errors. :func:`validate` reports
every problem at once, each with a JSON pointer (RFC 6901) to the offending part, the
value found and a sentence saying why (a Babel message, see :class:`Problem`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
import re
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any
from zoneinfo import available_timezones

import sqlalchemy as sa
from pyramid.i18n import TranslationString
from sqlalchemy.orm import Session

from prefcenter.errors import InvalidField, InvalidInput
from prefcenter.i18n import _, translate
from prefcenter.models import Customer, Interaction, Topic, TopicSubscription
from prefcenter.models.vocabulary import INTERACTION_KINDS, LOCALES

MAX_DEPTH = 10
MAX_CONDITIONS = 200
MAX_LIST_VALUES = 1000  # values in one ``in`` list
MAX_PROBLEMS = 100  # reported problems; past this the rule is clearly not a rule
MAX_DAYS = 36500  # 100 years: further back than any customer, and timedelta-safe
MAX_COUNT = 1_000_000
MAX_TEXT = 500
DEFAULT_DORMANCY_DAYS = 180

OPS = ("eq", "ne", "in", "gt", "gte", "lt", "lte", "exists")
COUNT_OPS = ("eq", "ne", "in", "gt", "gte", "lt", "lte")
ORDER_OPS = ("gt", "gte", "lt", "lte")
COLUMN_FIELDS = ("locale", "timezone", "country")
GROUPS = ("all", "any")
RULE_KEYS = ("all", "any", "not", "last_interaction_days", "interactions", "subscribed", "dormant")
CONDITION_KEYS = ("field", "op", "value")
ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
COUNTRY = re.compile(r"[A-Z]{2}")

_MISSING = object()


# --------------------------------------------------------------------------- errors


class Problem(InvalidField):
    """One thing wrong with a rule: where (a JSON pointer), the value found, and why.

    ``reason`` is the English sentence; ``message`` is the same sentence as a Babel
    translation string (``translate(problem.message, "fr")``, or :meth:`text`).
    """

    def __init__(self, pointer: str, value: Any, message: TranslationString, code: str) -> None:
        super().__init__(pointer, value, message.interpolate(), code)
        self.message = message

    @property
    def pointer(self) -> str:
        return self.field

    def text(self, locale: str) -> str:
        return translate(self.message, locale)

    def __str__(self) -> str:
        return f"{self.pointer or '(the rule)'}: {self.reason}"


class SegmentError(InvalidInput, ValueError):
    """A segment rule was refused; ``problems`` lists everything wrong with it."""

    errors: list[Problem]

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(list(problems))

    @property
    def problems(self) -> list[Problem]:
        return self.errors

    def messages(self, locale: str) -> list[str]:
        return [p.text(locale) for p in self.errors]


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(names)


def _shown(value: Any) -> str:
    """A value as the marketer typed it, shortened for a sentence."""
    text = repr(value) if isinstance(value, str) else _json_text(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return str(value)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def pointer_to(parent: str, token: str | int) -> str:
    """The RFC 6901 JSON pointer of ``token`` inside ``parent``."""
    text = str(token).replace("~", "~0").replace("/", "~1")
    return f"{parent}/{text}"


# --------------------------------------------------------------------------- validation


@functools.cache
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones())


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


class _Checker:
    """Walks a rule once, collecting every problem and the topic keys it names."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.conditions = 0
        self.topic_keys: list[tuple[str, str]] = []  # (pointer, key)
        self.too_deep = False

    def problem(self, pointer: str, value: Any, code: str, message: TranslationString) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(pointer, value, message, code))

    def check(self, rule: Any) -> list[Problem]:
        self.rule(rule, "", 1)
        if self.conditions > MAX_CONDITIONS:
            # First, and never cut off by MAX_PROBLEMS: it is the problem to fix first.
            message = _(
                "A segment can have at most ${max} conditions; this one has ${count}.",
                mapping={"max": MAX_CONDITIONS, "count": self.conditions},
            )
            self.problems.insert(0, Problem("", self.conditions, message, "too_many_conditions"))
        return self.problems

    # -- rules

    def rule(self, node: Any, pointer: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            if not self.too_deep:
                self.too_deep = True
                self.problem(
                    pointer,
                    node,
                    "too_deep",
                    _(
                        "Rules can be nested at most ${max} levels deep; simplify this part.",
                        mapping={"max": MAX_DEPTH},
                    ),
                )
            return
        if not isinstance(node, dict):
            self.problem(
                pointer,
                node,
                "not_a_rule",
                _(
                    'A rule must be an object such as {"all": [...]} or a condition, not ${type}.',
                    mapping={"type": _type_name(node)},
                ),
            )
            return
        if "field" in node:
            self.condition(node, pointer)
            return
        kinds = [key for key in node if key in RULE_KEYS]
        for key in node:
            if key not in RULE_KEYS:
                self.problem(
                    pointer_to(pointer, key),
                    node[key],
                    "unknown_key",
                    _(
                        "'${key}' is not a kind of rule: use ${keys} or field.",
                        mapping={"key": key, "keys": _quoted(RULE_KEYS)},
                    ),
                )
        if not node:
            self.problem(
                pointer,
                node,
                "empty_rule",
                _('An empty rule means nothing: write {"all": []} for everyone.'),
            )
        if len(kinds) > 1:
            self.problem(
                pointer,
                node,
                "several_rules",
                _(
                    "A rule has exactly one kind, but this one has ${kinds}: "
                    'combine them inside "all" or "any".',
                    mapping={"kinds": _quoted(kinds)},
                ),
            )
        for key in kinds:
            getattr(self, f"rule_{key}")(node[key], pointer_to(pointer, key), depth)

    def group(self, items: Any, pointer: str, depth: int, key: str) -> None:
        if not isinstance(items, list):
            self.problem(
                pointer,
                items,
                "not_a_list",
                _(
                    '"${key}" takes a list of rules, not ${type}.',
                    mapping={"key": key, "type": _type_name(items)},
                ),
            )
            return
        for i, item in enumerate(items):
            self.rule(item, pointer_to(pointer, i), depth + 1)

    def rule_all(self, items: Any, pointer: str, depth: int) -> None:
        self.group(items, pointer, depth, "all")

    def rule_any(self, items: Any, pointer: str, depth: int) -> None:
        self.group(items, pointer, depth, "any")

    def rule_not(self, item: Any, pointer: str, depth: int) -> None:
        self.rule(item, pointer, depth + 1)

    def rule_subscribed(self, key: Any, pointer: str, depth: int) -> None:
        self.conditions += 1
        if not isinstance(key, str) or not key or len(key) > 64:
            self.problem(
                pointer,
                key,
                "bad_topic",
                _('"subscribed" takes the key of a topic, such as "offers".'),
            )
            return
        self.topic_keys.append((pointer, key))

    def rule_dormant(self, value: Any, pointer: str, depth: int) -> None:
        self.conditions += 1
        if not isinstance(value, bool):
            self.problem(
                pointer,
                value,
                "not_a_boolean",
                _(
                    '"dormant" takes true or false, not ${value}.',
                    mapping={"value": _shown(value)},
                ),
            )

    def rule_last_interaction_days(self, node: Any, pointer: str, depth: int) -> None:
        self.conditions += 1
        if not self.members(node, pointer, "last_interaction_days", ("op", "value"), ("op",)):
            return
        op = self.op(node, pointer, OPS)
        if op is not None:
            self.operand(node, pointer, op, self.days_value)

    def rule_interactions(self, node: Any, pointer: str, depth: int) -> None:
        self.conditions += 1
        keys = ("kind", "within_days", "op", "value")
        if not self.members(node, pointer, "interactions", keys, ("within_days", "op")):
            return
        kind = node.get("kind", _MISSING)
        if kind is not _MISSING and kind not in INTERACTION_KINDS:
            self.problem(
                pointer_to(pointer, "kind"),
                kind,
                "bad_kind",
                _(
                    "${value} is not a kind of interaction: use one of ${kinds}.",
                    mapping={"value": _shown(kind), "kinds": _quoted(INTERACTION_KINDS)},
                ),
            )
        within = node.get("within_days", _MISSING)
        if within is not _MISSING and not (_is_int(within) and 1 <= within <= MAX_DAYS):
            self.problem(
                pointer_to(pointer, "within_days"),
                within,
                "bad_days",
                _(
                    '"within_days" must be a whole number of days from 1 to ${max}, not ${value}.',
                    mapping={"max": MAX_DAYS, "value": _shown(within)},
                ),
            )
        op = self.op(node, pointer, COUNT_OPS)
        if op is not None:
            self.operand(node, pointer, op, self.count_value)

    # -- conditions on customer fields

    def condition(self, node: dict[str, Any], pointer: str) -> None:
        self.conditions += 1
        for key in node:
            if key not in CONDITION_KEYS:
                self.problem(
                    pointer_to(pointer, key),
                    node[key],
                    "unknown_key",
                    _(
                        "'${key}' does not belong in a condition: it has ${keys}.",
                        mapping={"key": key, "keys": _quoted(CONDITION_KEYS)},
                    ),
                )
        field = node["field"]
        check_scalar = self.field_value_checker(field, pointer_to(pointer, "field"))
        op = self.op(node, pointer, OPS)
        if op is None:
            if "value" not in node:
                self.missing(pointer, "value")
            return
        if check_scalar is None:  # unknown field: still check the shape of the value
            check_scalar = _accept_any
        if op in ORDER_OPS:
            check_scalar = functools.partial(check_scalar, ordered=True)
        self.operand(node, pointer, op, check_scalar)

    def field_value_checker(self, field: Any, pointer: str) -> Callable[..., None] | None:
        if field in COLUMN_FIELDS:
            return getattr(self, f"{field}_value")
        if isinstance(field, str) and field.startswith("attributes."):
            name = field.removeprefix("attributes.")
            if ATTRIBUTE_NAME.fullmatch(name):
                return self.attribute_value
            self.problem(
                pointer,
                field,
                "bad_attribute",
                _(
                    "${value} is not an attribute name: use 1 to 64 letters, digits, "
                    "'_' or '-' after \"attributes.\".",
                    mapping={"value": _shown(field)},
                ),
            )
            return None
        self.problem(
            pointer,
            field,
            "unknown_field",
            _(
                "${value} is not a field you can filter on: use locale, timezone, "
                "country or attributes.<name>.",
                mapping={"value": _shown(field)},
            ),
        )
        return None

    def locale_value(self, value: Any, pointer: str, ordered: bool = False) -> None:
        if not self.text_value(value, pointer) or ordered:  # gt/lt take any text
            return
        if value not in LOCALES:
            self.problem(
                pointer,
                value,
                "bad_locale",
                _(
                    "${value} is not a language we use: ${locales}.",
                    mapping={"value": _shown(value), "locales": _quoted(LOCALES)},
                ),
            )

    def timezone_value(self, value: Any, pointer: str, ordered: bool = False) -> None:
        if not self.text_value(value, pointer) or ordered:  # gt/lt take any text
            return
        if value not in _timezones():
            self.problem(
                pointer,
                value,
                "bad_timezone",
                _(
                    "${value} is not a time zone we know (for example Europe/Paris).",
                    mapping={"value": _shown(value)},
                ),
            )

    def country_value(self, value: Any, pointer: str, ordered: bool = False) -> None:
        if not self.text_value(value, pointer) or ordered:  # gt/lt take any text
            return
        if not COUNTRY.fullmatch(value):
            self.problem(
                pointer,
                value,
                "bad_country",
                _(
                    "${value} is not a two-letter country code in capitals (for example FR).",
                    mapping={"value": _shown(value)},
                ),
            )

    def text_value(self, value: Any, pointer: str) -> bool:
        if isinstance(value, str):
            return True
        self.problem(
            pointer,
            value,
            "not_text",
            _("This field holds text; ${value} is not text.", mapping={"value": _shown(value)}),
        )
        return False

    def attribute_value(self, value: Any, pointer: str, ordered: bool = False) -> None:
        if isinstance(value, str):
            if len(value) > MAX_TEXT:
                self.problem(
                    pointer,
                    value,
                    "too_long",
                    _(
                        "Text to compare with is at most ${max} characters long.",
                        mapping={"max": MAX_TEXT},
                    ),
                )
            return
        if _is_number(value):
            return
        if isinstance(value, bool) and not ordered:
            return
        if ordered:
            message = _(
                "Only a number or a text can be compared in order, not ${value}.",
                mapping={"value": _shown(value)},
            )
        else:
            message = _(
                "An attribute is compared with a number, a text or true/false, not ${value}.",
                mapping={"value": _shown(value)},
            )
        self.problem(pointer, value, "bad_value", message)

    # -- operators and operands

    def members(
        self,
        node: Any,
        pointer: str,
        name: str,
        allowed: Sequence[str],
        required: Sequence[str],
    ) -> bool:
        """Checks an object's keys; False when ``node`` is not an object at all."""
        if not isinstance(node, dict):
            self.problem(
                pointer,
                node,
                "not_an_object",
                _(
                    '"${name}" takes an object with ${keys}, not ${type}.',
                    mapping={"name": name, "keys": _quoted(allowed), "type": _type_name(node)},
                ),
            )
            return False
        for key in node:
            if key not in allowed:
                self.problem(
                    pointer_to(pointer, key),
                    node[key],
                    "unknown_key",
                    _(
                        "'${key}' does not belong in \"${name}\": it has ${keys}.",
                        mapping={"key": key, "name": name, "keys": _quoted(allowed)},
                    ),
                )
        for key in required:
            if key not in node:
                self.missing(pointer, key)
        return True

    def missing(self, pointer: str, key: str) -> None:
        self.problem(
            pointer_to(pointer, key),
            None,
            "missing",
            _('"${key}" is missing here.', mapping={"key": key}),
        )

    def op(self, node: dict[str, Any], pointer: str, allowed: Sequence[str]) -> str | None:
        op = node.get("op", _MISSING)
        if op is _MISSING:
            if "field" in node:
                self.missing(pointer, "op")
            return None
        if op in allowed:
            return op
        self.problem(
            pointer_to(pointer, "op"),
            op,
            "bad_op",
            _(
                "The op ${value} is not one of ${ops}.",
                mapping={"value": _shown(op), "ops": _quoted(allowed)},
            ),
        )
        return None

    def operand(
        self, node: dict[str, Any], pointer: str, op: str, check: Callable[[Any, str], None]
    ) -> None:
        at = pointer_to(pointer, "value")
        if "value" not in node:
            self.missing(pointer, "value")
            return
        value = node["value"]
        if op == "exists":
            if not isinstance(value, bool):
                self.problem(
                    at,
                    value,
                    "not_a_boolean",
                    _(
                        '"exists" takes true or false, not ${value}.',
                        mapping={"value": _shown(value)},
                    ),
                )
            return
        if op == "in":
            if not isinstance(value, list) or not value:
                self.problem(
                    at,
                    value,
                    "not_a_list",
                    _(
                        '"in" takes a non-empty list of values, not ${value}.',
                        mapping={"value": _shown(value)},
                    ),
                )
                return
            if len(value) > MAX_LIST_VALUES:
                self.problem(
                    at,
                    len(value),
                    "list_too_long",
                    _(
                        '"in" takes at most ${max} values; this list has ${count}.',
                        mapping={"max": MAX_LIST_VALUES, "count": len(value)},
                    ),
                )
                return
            for i, item in enumerate(value):
                check(item, pointer_to(at, i))
            return
        check(value, at)

    def days_value(self, value: Any, pointer: str) -> None:
        if _is_int(value) and 0 <= value <= MAX_DAYS:
            return
        self.problem(
            pointer,
            value,
            "bad_days",
            _(
                "A number of days must be a whole number from 0 to ${max}, not ${value}.",
                mapping={"max": MAX_DAYS, "value": _shown(value)},
            ),
        )

    def count_value(self, value: Any, pointer: str) -> None:
        if _is_int(value) and 0 <= value <= MAX_COUNT:
            return
        self.problem(
            pointer,
            value,
            "bad_count",
            _(
                "A number of interactions must be a whole number from 0 to ${max}, not ${value}.",
                mapping={"max": MAX_COUNT, "value": _shown(value)},
            ),
        )


def _accept_any(value: Any, pointer: str, ordered: bool = False) -> None:
    return None


def _check(rule: Any) -> _Checker:
    checker = _Checker()
    checker.check(rule)
    return checker


def _topics(session: Session, keys: Sequence[str]) -> dict[str, tuple[uuid.UUID, str]]:
    if not keys:
        return {}
    rows = session.execute(
        sa.select(Topic.key, Topic.id, Topic.regime).where(Topic.key.in_(sorted(set(keys))))
    )
    return {key: (topic_id, regime) for key, topic_id, regime in rows}


def _unknown_topics(checker: _Checker, topics: dict[str, tuple[uuid.UUID, str]]) -> list[Problem]:
    return [
        Problem(
            pointer,
            key,
            _("There is no topic with the key ${value}.", mapping={"value": _shown(key)}),
            "unknown_topic",
        )
        for pointer, key in checker.topic_keys
        if key not in topics
    ]


def validate(rule: Any, session: Session | None = None) -> None:
    """Raise :class:`SegmentError` listing every problem with ``rule``; None if it is valid.

    With a ``session``, topic keys named by ``subscribed`` must exist (one query on
    ``topics``); without one only the rule's shape and values are checked.
    """
    checker = _check(rule)
    problems = list(checker.problems)
    if session is not None and checker.topic_keys:
        topics = _topics(session, [key for _pointer, key in checker.topic_keys])
        problems.extend(_unknown_topics(checker, topics))
    if problems:
        raise SegmentError(problems[:MAX_PROBLEMS])


# --------------------------------------------------------------------------- SQL


@dataclasses.dataclass(frozen=True)
class _Compiler:
    """Turns a valid rule into a boolean SQL expression over ``customers``."""

    postgresql: bool
    at: dt.datetime
    dormancy_days: int
    topics: dict[str, tuple[uuid.UUID, str]]

    def rule(self, node: dict[str, Any]) -> sa.ColumnElement[bool]:
        if "field" in node:
            return self.condition(node["field"], node["op"], node["value"])
        ((key, value),) = node.items()
        return getattr(self, f"rule_{key}")(value)

    def rule_all(self, items: list[Any]) -> sa.ColumnElement[bool]:
        return sa.and_(*(self.rule(item) for item in items)) if items else sa.true()

    def rule_any(self, items: list[Any]) -> sa.ColumnElement[bool]:
        return sa.or_(*(self.rule(item) for item in items)) if items else sa.false()

    def rule_not(self, item: dict[str, Any]) -> sa.ColumnElement[bool]:
        return sa.not_(self.rule(item))

    def rule_dormant(self, dormant: bool) -> sa.ColumnElement[bool]:
        expression = dormant_condition(self.at, self.dormancy_days)
        return expression if dormant else sa.not_(expression)

    def rule_subscribed(self, key: str) -> sa.ColumnElement[bool]:
        topic_id, regime = self.topics[key]
        sub = TopicSubscription
        row = sa.select(sa.literal(1)).where(
            sub.customer_id == Customer.id, sub.topic_id == topic_id
        )
        if regime == "opt_in":
            return row.where(sub.status == "subscribed").exists()
        return sa.not_(row.where(sub.status == "unsubscribed").exists())

    # -- days since the last interaction (whole days; never = infinitely long ago)

    def rule_last_interaction_days(self, node: dict[str, Any]) -> sa.ColumnElement[bool]:
        op, value = node["op"], node["value"]
        last = Customer.last_interaction_at
        if op == "exists":
            return last.is_not(None) if value else last.is_(None)

        def at_least(days: int) -> sa.ColumnElement[bool]:
            if days <= 0:
                return sa.true()
            return sa.or_(last.is_(None), last <= self.at - dt.timedelta(days=days))

        def equal(days: int) -> sa.ColumnElement[bool]:
            return sa.and_(at_least(days), sa.not_(at_least(days + 1)))

        return _ordered(op, value, at_least, equal)

    # -- counts of interactions in (at - within_days, at]

    def rule_interactions(self, node: dict[str, Any]) -> sa.ColumnElement[bool]:
        op, value = node["op"], node["value"]
        rows = sa.select(Interaction.id).where(
            Interaction.customer_id == Customer.id,
            Interaction.occurred_at > self.at - dt.timedelta(days=node["within_days"]),
            Interaction.occurred_at <= self.at,
        )
        if "kind" in node:
            rows = rows.where(Interaction.kind == node["kind"])
        count = rows.with_only_columns(sa.func.count()).scalar_subquery()

        def at_least(n: int) -> sa.ColumnElement[bool]:
            # 0 and 1 are the common cases ("bought once", "never bought"): EXISTS stops
            # at the first row where a count reads them all.
            if n <= 0:
                return sa.true()
            if n == 1:
                return rows.exists()
            return count >= n

        def equal(n: int) -> sa.ColumnElement[bool]:
            return sa.not_(rows.exists()) if n == 0 else count == n

        if op == "in":
            return count.in_(value)
        return _ordered(op, value, at_least, equal)

    # -- customer fields

    def condition(self, field: str, op: str, value: Any) -> sa.ColumnElement[bool]:
        if field in COLUMN_FIELDS:
            return self.column_condition(getattr(Customer, field), op, value)
        return self.attribute_condition(field.removeprefix("attributes."), op, value)

    def column_condition(self, column: Any, op: str, value: Any) -> sa.ColumnElement[bool]:
        present = column.is_not(None)
        if op == "exists":
            return present if value else sa.not_(present)
        if op == "ne":
            return sa.not_(self.column_condition(column, "eq", value))
        if op == "in":
            return sa.and_(present, column.in_(value))
        return sa.and_(present, _compare(self.text(column), op, value))

    def attribute_condition(self, name: str, op: str, value: Any) -> sa.ColumnElement[bool]:
        if op == "exists":
            present = self.attribute(name).present
            return present if value else sa.not_(present)
        if op == "ne":
            return sa.not_(self.attribute_condition(name, "eq", value))
        if op == "in":
            return sa.or_(*(self.attribute_condition(name, "eq", item) for item in value))
        attribute = self.attribute(name)
        if isinstance(value, bool):
            return attribute.boolean(value)
        if isinstance(value, str):
            return sa.and_(attribute.is_string, _compare(self.text(attribute.string), op, value))
        return sa.and_(
            attribute.is_number, _compare(attribute.number, op, attribute.literal(value))
        )

    def text(self, expression: Any) -> Any:
        # PostgreSQL orders text by the database's collation; "C" orders by code point,
        # as SQLite does, so gt/lt mean the same on both.
        return sa.collate(expression, "C") if self.postgresql else expression

    def attribute(self, name: str) -> _Attribute:
        if self.postgresql:
            return _PostgresAttribute(name)
        return _SQLiteAttribute(name)


def _ordered(
    op: str,
    value: Any,
    at_least: Callable[[int], sa.ColumnElement[bool]],
    equal: Callable[[int], sa.ColumnElement[bool]],
) -> sa.ColumnElement[bool]:
    """An integer comparison built from "at least n" and "exactly n"."""
    if op == "gte":
        return at_least(value)
    if op == "gt":
        return at_least(value + 1)
    if op == "lt":
        return sa.not_(at_least(value))
    if op == "lte":
        return sa.not_(at_least(value + 1))
    if op == "eq":
        return equal(value)
    if op == "ne":
        return sa.not_(equal(value))
    assert op == "in", op
    return sa.or_(*(equal(n) for n in sorted(set(value))))


def _compare(left: Any, op: str, value: Any) -> sa.ColumnElement[bool]:
    if op == "eq":
        return left == value
    if op == "gt":
        return left > value
    if op == "gte":
        return left >= value
    if op == "lt":
        return left < value
    assert op == "lte", op
    return left <= value


class _Attribute:
    """One key of ``customers.attributes``: its JSON type and its value as SQL.

    Every ``is_*``/``present`` expression is true or false, never NULL, and guards the
    value so that a comparison only ever sees values of its own JSON type.
    """

    present: sa.ColumnElement[bool]
    is_number: sa.ColumnElement[bool]
    is_string: sa.ColumnElement[bool]
    number: sa.ColumnElement[Any]
    string: sa.ColumnElement[Any]

    def boolean(self, value: bool) -> sa.ColumnElement[bool]:
        raise NotImplementedError

    def literal(self, number: float) -> Any:
        return number


class _SQLiteAttribute(_Attribute):
    def __init__(self, name: str) -> None:
        path = f'$."{name}"'  # the name is [A-Za-z0-9_-]+, so quoting is enough
        kind = sa.func.json_type(Customer.attributes, path)
        value = sa.func.json_extract(Customer.attributes, path)
        known = kind.is_not(None)
        self._kind, self._known = kind, known
        self.present = sa.and_(known, kind != "null")
        self.is_number = sa.and_(known, kind.in_(("integer", "real")))
        self.is_string = sa.and_(known, kind == "text")
        self.number = value
        self.string = value

    def boolean(self, value: bool) -> sa.ColumnElement[bool]:
        return sa.and_(self._known, self._kind == ("true" if value else "false"))


class _PostgresAttribute(_Attribute):
    def __init__(self, name: str) -> None:
        key = sa.literal(name, sa.Text)
        element = Customer.attributes.op("->")(key)
        kind = sa.func.jsonb_typeof(element, type_=sa.Text)
        text = Customer.attributes.op("->>", return_type=sa.Text)(key)
        known = kind.is_not(None)
        self._kind, self._known, self._text = kind, known, text
        self.present = sa.and_(known, kind != "null")
        self.is_number = sa.and_(known, kind == "number")
        self.is_string = sa.and_(known, kind == "string")
        # CASE first, cast second: a text that is not a number is never cast.
        self.number = sa.cast(sa.case((kind == "number", text)), sa.Numeric)
        self.string = text

    def boolean(self, value: bool) -> sa.ColumnElement[bool]:
        return sa.and_(
            self._known, self._kind == "boolean", self._text == ("true" if value else "false")
        )

    def literal(self, number: float) -> Any:
        # numeric = numeric, exactly: 0.1 in JSON equals the 0.1 typed in the rule.
        return Decimal(repr(number))


def dormant_condition(at: dt.datetime, dormancy_days: int) -> sa.ColumnElement[bool]:
    """Dormant at ``at``: last interaction (else creation) ``dormancy_days`` or more ago."""
    cutoff = at - dt.timedelta(days=dormancy_days)
    last = Customer.last_interaction_at
    return sa.or_(
        sa.and_(last.is_not(None), last <= cutoff),
        sa.and_(last.is_(None), Customer.created_at <= cutoff),
    )


def _check_parameters(at: dt.datetime, dormancy_days: int) -> None:
    if not isinstance(at, dt.datetime) or at.tzinfo is None:
        raise ValueError(f"at={at!r}: a timezone-aware datetime is required")
    if not _is_int(dormancy_days) or not 1 <= dormancy_days <= MAX_DAYS:
        raise ValueError(f"dormancy_days={dormancy_days!r}: expected 1 to {MAX_DAYS} days")


def compile_rule(
    session: Session,
    rule: Any,
    *,
    at: dt.datetime,
    dormancy_days: int = DEFAULT_DORMANCY_DAYS,
) -> sa.Select:
    """``select(Customer.id)`` of the customers in the segment at ``at``, not executed.

    A rule with a problem raises :class:`SegmentError` before the database is used; the
    only query made here looks up the regimes of the topics the rule names (an unknown
    key raises then). The result can be counted, paged, or given to
    :func:`prefcenter.policy.audience` as its candidates.
    """
    _check_parameters(at, dormancy_days)
    checker = _check(rule)
    if checker.problems:
        raise SegmentError(checker.problems)
    topics = _topics(session, [key for _pointer, key in checker.topic_keys])
    unknown = _unknown_topics(checker, topics)
    if unknown:
        raise SegmentError(unknown)
    dialect = session.get_bind().dialect.name
    compiler = _Compiler(dialect == "postgresql", at, dormancy_days, topics)
    members = sa.select(Customer.id).where(Customer.erased_at.is_(None), compiler.rule(rule))
    # Never correlated to an enclosing query's customers: it is a set in its own right.
    return members.correlate(None)


def count(
    session: Session,
    rule: Any,
    *,
    at: dt.datetime,
    dormancy_days: int = DEFAULT_DORMANCY_DAYS,
) -> int:
    """How many customers are in the segment at ``at`` (one COUNT query)."""
    members = compile_rule(session, rule, at=at, dormancy_days=dormancy_days).subquery()
    return session.scalar(sa.select(sa.func.count()).select_from(members)) or 0


__all__ = [
    "DEFAULT_DORMANCY_DAYS",
    "MAX_CONDITIONS",
    "MAX_DEPTH",
    "OPS",
    "Problem",
    "SegmentError",
    "compile_rule",
    "count",
    "dormant_condition",
    "validate",
]
