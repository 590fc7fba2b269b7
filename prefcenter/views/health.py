from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pyramid.view import view_config

from ..broker import check_broker


def _check(fn: Any) -> str:
    try:
        fn()
    except Exception as exc:  # the point of a health check is to report any failure
        return f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return "ok"


@view_config(route_name="healthz", renderer="json", request_method="GET")
def healthz(request: Any) -> dict[str, Any]:
    """Database and broker reachable -> 200; otherwise 503 naming the failing part."""

    def database() -> None:
        request.dbsession.execute(sa.text("SELECT 1"))

    checks = {
        "database": _check(database),
        "broker": _check(lambda: check_broker(request.registry["broker"])),
    }
    failing = sorted(name for name, result in checks.items() if result != "ok")
    if failing:
        request.response.status_int = 503
    return {"status": "unavailable" if failing else "ok", "checks": checks, "failing": failing}


@view_config(route_name="home", renderer="home.html", request_method="GET")
def home(request: Any) -> dict[str, Any]:
    return {}
