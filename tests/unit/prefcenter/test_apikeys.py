import hashlib
import re

import pytest
import sqlalchemy as sa

from prefcenter.errors import InvalidInput, NotFound
from prefcenter.models import ApiKey
from prefcenter.models.vocabulary import API_SCOPES
from prefcenter.services.apikeys import (
    VerifiedKey,
    create_api_key,
    find_api_key,
    hash_key,
    register_api_key,
    revoke_api_key,
    verify_api_key,
)
from tests.factories import make_api_key


def test_create_api_key_returns_a_plaintext_of_which_only_the_hash_is_stored(dbsession):
    api_key, plaintext = create_api_key(
        dbsession, "Loyalty program", ["customers:read", "interactions:write"]
    )

    assert re.fullmatch(r"pc_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", plaintext)
    stored = dbsession.scalar(sa.select(ApiKey).where(ApiKey.id == api_key.id))
    assert stored.prefix == plaintext[3:11]
    assert stored.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert plaintext[12:] not in (stored.key_hash, stored.prefix, stored.name)
    assert stored.scopes == ["customers:read", "interactions:write"]
    assert stored.name == "Loyalty program"


def test_two_keys_differ(dbsession):
    _, first = make_api_key(dbsession)
    _, second = make_api_key(dbsession)
    assert first != second
    assert first[3:11] != second[3:11]


def test_create_api_key_names_an_unknown_scope_and_lists_the_valid_ones(dbsession):
    with pytest.raises(InvalidInput) as caught:
        create_api_key(dbsession, "k", ["customers:read", "customers:delete"])
    [error] = caught.value.errors
    assert (error.field, error.value) == ("scopes", "customers:delete")
    assert all(scope in error.reason for scope in API_SCOPES)
    assert dbsession.scalar(sa.select(sa.func.count()).select_from(ApiKey)) == 0


def test_create_api_key_needs_at_least_one_scope_and_a_name(dbsession):
    with pytest.raises(InvalidInput) as caught:
        create_api_key(dbsession, "  ", [" ", ""])
    assert [(e.field, e.value) for e in caught.value.errors] == [("name", ""), ("scopes", [])]
    assert "at least one scope" in caught.value.errors[1].reason


def test_create_api_key_ignores_repeated_scopes(dbsession):
    api_key, _ = create_api_key(dbsession, "k", ["gdpr", "gdpr", "admin"])
    assert api_key.scopes == ["gdpr", "admin"]


def test_find_api_key_finds_the_key_by_its_plaintext_only(dbsession):
    api_key, plaintext = make_api_key(dbsession)
    assert find_api_key(dbsession, plaintext) is api_key
    assert find_api_key(dbsession, plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) is None
    assert find_api_key(dbsession, api_key.key_hash) is None
    assert find_api_key(dbsession, "") is None


def test_a_revoked_key_is_no_longer_found(dbsession):
    api_key, plaintext = make_api_key(dbsession)
    revoked = revoke_api_key(dbsession, f"pc_{api_key.prefix}")
    assert revoked is api_key
    assert api_key.revoked_at is not None
    assert find_api_key(dbsession, plaintext) is None


def test_revoking_twice_keeps_the_first_revocation_time(dbsession):
    api_key, _ = make_api_key(dbsession)
    first = revoke_api_key(dbsession, api_key.prefix).revoked_at
    assert revoke_api_key(dbsession, api_key.prefix).revoked_at == first


def test_revoking_an_unknown_prefix_says_so(dbsession):
    with pytest.raises(NotFound, match="'zzzzzzzz' is not the prefix of any API key"):
        revoke_api_key(dbsession, "zzzzzzzz")


def test_register_api_key_refuses_a_malformed_key_without_echoing_it(dbsession):
    with pytest.raises(InvalidInput) as caught:
        register_api_key(dbsession, "k", ["admin"], "pc_short_secretvalue")
    [error] = caught.value.errors
    assert error.field == "key"
    assert "secretvalue" not in str(caught.value)


def test_register_api_key_refuses_a_prefix_already_used(dbsession):
    api_key, _ = make_api_key(dbsession)
    other = f"pc_{api_key.prefix}_" + "x" * 43
    with pytest.raises(InvalidInput) as caught:
        register_api_key(dbsession, "k", ["admin"], other)
    [error] = caught.value.errors
    assert (error.field, error.value) == ("prefix", api_key.prefix)


def test_verify_api_key_finds_an_active_key_by_its_digest(dbsession):
    api_key, plaintext = make_api_key(dbsession, scopes=("customers:read", "gdpr"))

    verified = verify_api_key(dbsession, hash_key(plaintext))

    assert verified == VerifiedKey(api_key.id, api_key.prefix, ("customers:read", "gdpr"))
    assert verify_api_key(dbsession, hash_key(plaintext + "x")) is None
    revoke_api_key(dbsession, api_key.prefix)
    assert verify_api_key(dbsession, hash_key(plaintext)) is None
