import datetime as dt

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from prefcenter.errors import InvalidInput
from prefcenter.models import User
from prefcenter.services.users import authenticate, create_user
from tests.factories import make_user


def test_create_user_stores_an_argon2_hash_and_a_lower_cased_email(dbsession):
    user = create_user(dbsession, "  Claire.Dupont@Example.FR ", "long enough secret", "marketer")

    stored = dbsession.scalar(sa.select(User).where(User.id == user.id))
    assert stored.email == "claire.dupont@example.fr"
    assert stored.role == "marketer"
    assert stored.password_hash.startswith("$argon2id$")
    assert "long enough secret" not in stored.password_hash
    assert PasswordHasher().verify(stored.password_hash, "long enough secret")


@pytest.mark.parametrize("email", ["", "no-at-sign", "two@@example.com", "a b@example.com", "x@y"])
def test_create_user_rejects_implausible_email(dbsession, email):
    with pytest.raises(InvalidInput) as caught:
        create_user(dbsession, email, "long enough secret", "marketer")
    [error] = caught.value.errors
    assert (error.field, error.value) == ("email", email.strip().lower())
    assert "not an e-mail address" in error.reason


def test_create_user_rejects_an_email_already_used_whatever_its_case(dbsession):
    make_user(dbsession, email="taken@example.com")
    with pytest.raises(InvalidInput) as caught:
        create_user(dbsession, "TAKEN@example.com", "long enough secret", "admin")
    [error] = caught.value.errors
    assert (error.field, error.value) == ("email", "taken@example.com")
    assert "already used" in error.reason


def test_create_user_rejects_a_short_password_without_echoing_it(dbsession):
    with pytest.raises(InvalidInput) as caught:
        create_user(dbsession, "short@example.com", "hunter2", "marketer")
    [error] = caught.value.errors
    assert error.field == "password"
    assert "hunter2" not in str(caught.value)
    assert "at least 10 characters, got 7" in error.reason


def test_create_user_reports_every_bad_field_and_creates_nothing(dbsession):
    with pytest.raises(InvalidInput) as caught:
        create_user(dbsession, "nope", "short", "superuser")
    assert [e.field for e in caught.value.errors] == ["email", "password", "role"]
    assert "valid roles: admin, marketer, viewer" in caught.value.errors[2].reason
    assert dbsession.scalar(sa.select(sa.func.count()).select_from(User)) == 0


def test_authenticate_returns_the_user_and_records_the_log_in(dbsession):
    user = make_user(dbsession, email="login@example.com", password="right password")
    assert user.last_login_at is None

    assert authenticate(dbsession, "Login@Example.com", "right password") is user
    assert user.last_login_at is not None
    assert dt.datetime.now(dt.UTC) - user.last_login_at < dt.timedelta(minutes=1)


def test_authenticate_refuses_a_wrong_password_and_an_unknown_email(dbsession):
    make_user(dbsession, email="login@example.com", password="right password")
    assert authenticate(dbsession, "login@example.com", "wrong password") is None
    assert authenticate(dbsession, "nobody@example.com", "right password") is None


def test_authenticate_refuses_a_disabled_user(dbsession):
    user = make_user(dbsession, email="gone@example.com", password="right password")
    user.disabled_at = dt.datetime.now(dt.UTC)
    dbsession.flush()
    assert authenticate(dbsession, "gone@example.com", "right password") is None
    assert user.last_login_at is None


def test_authenticate_rehashes_a_hash_made_with_weaker_parameters(dbsession):
    user = make_user(dbsession, email="old@example.com", password="right password")
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    user.password_hash = weak.hash("right password")
    dbsession.flush()

    assert authenticate(dbsession, "old@example.com", "right password") is user
    assert user.password_hash != weak.hash("right password")
    assert not PasswordHasher().check_needs_rehash(user.password_hash)
    assert PasswordHasher().verify(user.password_hash, "right password")
