"""Settings from one place: the ini file, overridden by environment variables.

Secrets and URLs come from the environment. In an ini file a value written as
``env:NAME`` *requires* the variable NAME; start-up fails with a message that
names every missing or malformed setting.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# Environment variable -> setting it overrides.
ENVIRONMENT_OVERRIDES = {
    "DATABASE_URL": "sqlalchemy.url",
    "BROKER_URL": "dramatiq.broker_url",
    "SENDGRID_API_KEY": "sendgrid.api_key",
    "PREFCENTER_SECRET": "prefcenter.secret",
}

BROKER_SCHEMES = ("stub", "redis", "rediss", "amqp", "amqps")
MIN_SECRET_LENGTH = 32

DEFAULTS: dict[str, Any] = {
    "dramatiq.broker_url": "stub://",
    "prefcenter.worker.in_process": "false",
    "prefcenter.worker.threads": "2",
    "prefcenter.email.transport": "outbox",
    "prefcenter.env": "development",
    # Where customers reach the portal: the base of every link a message carries.
    "prefcenter.public_url": "http://localhost:6543",
}


class SettingsError(Exception):
    """The configuration cannot be used; the message lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "prefcenter cannot start, the configuration is incomplete:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def resolve_settings(
    settings: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Return the effective settings, or raise SettingsError naming each problem."""
    environ = os.environ if environ is None else environ
    resolved: dict[str, Any] = {**DEFAULTS, **settings}
    problems: list[str] = []

    for variable, key in ENVIRONMENT_OVERRIDES.items():
        if environ.get(variable):
            resolved[key] = environ[variable]

    for key, value in list(resolved.items()):
        if isinstance(value, str) and value.startswith("env:"):
            variable = value[4:].strip()
            if environ.get(variable):
                resolved[key] = environ[variable]
            else:
                problems.append(
                    f"{key}: environment variable {variable} is not set "
                    f"(production.ini reads it from the environment)"
                )

    problems.extend(_validate(resolved))
    if problems:
        raise SettingsError(problems)
    return resolved


def _validate(settings: Mapping[str, Any]) -> list[str]:
    problems = []
    url = settings.get("sqlalchemy.url")
    if not url:
        problems.append("sqlalchemy.url (DATABASE_URL): no database URL is configured")
    elif not str(url).startswith("env:"):
        try:
            parsed = make_url(str(url))
        except (ArgumentError, ValueError):  # ValueError: e.g. a non-numeric port
            problems.append(
                f"sqlalchemy.url (DATABASE_URL): {redact(str(url))!r} is not a database URL "
                "(expected e.g. postgresql+psycopg://user@host/dbname)"
            )
        else:
            if parsed.port is not None and not 0 < parsed.port < 65536:
                problems.append(
                    f"sqlalchemy.url (DATABASE_URL): port {parsed.port} is out of range "
                    "(1 to 65535)"
                )
            elif parsed.get_backend_name() not in ("sqlite", "postgresql"):
                problems.append(
                    f"sqlalchemy.url (DATABASE_URL): backend {parsed.get_backend_name()!r} "
                    "is not supported (use sqlite or postgresql)"
                )

    broker = str(settings.get("dramatiq.broker_url", ""))
    if not broker.startswith("env:"):
        try:
            parts = urlsplit(broker)
            scheme, _port = parts.scheme, parts.port  # .port raises for e.g. :99999
        except ValueError:
            scheme = ""
        if scheme not in BROKER_SCHEMES:
            problems.append(
                f"dramatiq.broker_url (BROKER_URL): {redact(broker)!r} is not a broker URL "
                "(expected redis://host:6379/0 or amqp://user:password@host:5672/)"
            )

    secret = str(settings.get("prefcenter.secret", ""))
    if not secret.startswith("env:") and len(secret) < MIN_SECRET_LENGTH:
        problems.append(
            f"prefcenter.secret (PREFCENTER_SECRET): must be at least {MIN_SECRET_LENGTH} "
            f"characters long, got {len(secret)} (generate one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )

    if settings.get("prefcenter.email.transport") == "sendgrid":
        key = str(settings.get("sendgrid.api_key", ""))
        if not key.startswith("env:") and not key.startswith("SG."):
            problems.append(
                "sendgrid.api_key (SENDGRID_API_KEY): a SendGrid API key starts with 'SG.'"
                + (" and none is set" if not key else "")
            )
    return problems


def redact(url: str) -> str:
    """Hide a password inside a URL before it is printed, even in a malformed URL.

    Whatever follows a ``:`` up to the first ``@`` is taken for a password, so
    ``scheme:/user:secret@host`` (which urlsplit cannot parse) is redacted too.
    """
    return _PASSWORD.sub(":***@", url, count=1)


_PASSWORD = re.compile(r":[^:@/]+@")


def database_url(settings: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> str:
    """Just the database URL (for migrations, which need nothing else)."""
    environ = os.environ if environ is None else environ
    url = str(environ.get("DATABASE_URL") or settings.get("sqlalchemy.url") or "")
    if url.startswith("env:"):
        variable = url[4:].strip()
        if not environ.get(variable):
            raise SettingsError([f"sqlalchemy.url: environment variable {variable} is not set"])
        url = environ[variable]
    if not url:
        raise SettingsError(["sqlalchemy.url (DATABASE_URL): no database URL is configured"])
    return url
