"""Small builders for test data: a test states only the fields that matter to it."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy.orm import Session

from prefcenter.models import ApiKey, Customer, Topic, User
from prefcenter.services.apikeys import create_api_key
from prefcenter.services.users import create_user

_sequence = itertools.count(1)


def _next() -> int:
    return next(_sequence)


def make_customer(session: Session, **overrides: Any) -> Customer:
    n = _next()
    fields: dict[str, Any] = {
        "external_id": f"TEST-{n:06d}",
        "email": f"customer{n}@example.com",
        "first_name": "Camille",
        "last_name": "Martin",
        "locale": "fr",
        "timezone": "Europe/Paris",
    }
    fields.update(overrides)
    customer = Customer(**fields)
    session.add(customer)
    session.flush()
    return customer


def make_topic(session: Session, **overrides: Any) -> Topic:
    n = _next()
    fields: dict[str, Any] = {
        "key": f"topic_{n}",
        "names": {"fr": f"Sujet {n}", "en": f"Topic {n}"},
        "descriptions": {},
        "kind": "marketing",
        "regime": "opt_in",
    }
    fields.update(overrides)
    topic = Topic(**fields)
    session.add(topic)
    session.flush()
    return topic


def make_user(
    session: Session,
    email: str | None = None,
    password: str = "correct horse battery",
    role: str = "marketer",
) -> User:
    return create_user(session, email or f"user{_next()}@example.com", password, role)


def make_api_key(
    session: Session, name: str = "test key", scopes: tuple[str, ...] = ("customers:read",)
) -> tuple[ApiKey, str]:
    return create_api_key(session, name, scopes)
