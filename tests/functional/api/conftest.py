from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session

from tests.factories import make_api_key


@pytest.fixture
def bearer(dbsession: Session) -> Callable[..., dict[str, str]]:
    """Headers carrying a fresh API key with the given scopes."""

    def make(*scopes: str) -> dict[str, str]:
        _key, plaintext = make_api_key(dbsession, scopes=scopes)
        return {"Authorization": f"Bearer {plaintext}"}

    return make
