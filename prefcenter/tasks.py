"""Dramatiq actors of the preference center (thin: open a transaction, call a service).

A worker process calls :func:`configure` once with its settings before consuming
messages; every message then runs in its own transaction (:func:`unit_of_work`).
The web app's in-process worker hands over its own session factory instead
(:func:`use_session_factory`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from .broker import actor
from .db import make_engine, make_session_factory, task_session
from .models import WorkerPing, utcnow

_session_factory: sessionmaker[Session] | None = None
_engine: Engine | None = None
_settings: Mapping[str, Any] | None = None


def configure(settings: Mapping[str, Any]) -> sessionmaker[Session]:
    """Build this process's engine and session factory from the settings."""
    global _engine
    dispose()
    use_settings(settings)
    _engine = make_engine(settings["sqlalchemy.url"])
    return use_session_factory(make_session_factory(_engine))


def use_settings(settings: Mapping[str, Any]) -> None:
    """The resolved settings actors read (the campaign engine's transports and links)."""
    global _settings
    _settings = dict(settings)


def current_settings() -> Mapping[str, Any]:
    if _settings is None:
        raise RuntimeError("prefcenter.tasks is not configured: no settings for the actors")
    return _settings


def use_session_factory(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    global _session_factory
    _session_factory = factory
    return factory


def dispose() -> None:
    """Forget the session factory and close the engine :func:`configure` opened."""
    global _engine, _session_factory
    if _engine is not None:
        _engine.dispose()
    _engine = None
    _session_factory = None


@contextlib.contextmanager
def unit_of_work() -> Iterator[Session]:
    """A session in its own transaction: committed on success, rolled back on error."""
    if _session_factory is None:
        raise RuntimeError(
            "prefcenter.tasks is not configured: the worker must call "
            "prefcenter.tasks.configure(settings) before it consumes messages"
        )
    with task_session(_session_factory) as session:
        yield session


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# No retries: a failed ping is reported by `prefcenter ping-worker` timing out.
@actor(max_retries=0, time_limit=30_000)
def record_worker_ping(nonce: str, sent_at_iso: str) -> None:
    """Record that this worker process consumed the ping ``nonce`` (idempotent)."""
    row = {
        "nonce": nonce,
        "worker": worker_identity(),
        "sent_at": dt.datetime.fromisoformat(sent_at_iso),
        "received_at": utcnow(),
    }
    with unit_of_work() as session:
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        # A message delivered twice records the first worker that answered, once.
        session.execute(dialect.insert(WorkerPing).values(row).on_conflict_do_nothing())
