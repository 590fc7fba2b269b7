"""The Dramatiq broker chosen by setting, and actors bound to it lazily.

Actors are declared with :func:`actor` at import time but only bound to a broker
by :func:`use_broker`, so the web app, the worker and the tests each choose their
broker (stub, Redis, RabbitMQ) without import-order tricks.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import dramatiq
from dramatiq.brokers.stub import StubBroker

_lazy_actors: list[LazyActor] = []

# Modules that declare actors; campaigns.tasks is optional (prefcenter never needs it).
TASK_MODULES = ("prefcenter.tasks", "prefcenter.webhook_tasks", "campaigns.tasks")
OPTIONAL_TASK_MODULES = ("campaigns.tasks",)


def load_task_modules() -> list[str]:
    """Import every module that declares actors, so that use_broker() binds them."""
    loaded = []
    for name in TASK_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # Only the optional module itself may be missing, not something it imports.
            if name in OPTIONAL_TASK_MODULES and exc.name == name:
                continue
            raise
        loaded.append(name)
    return loaded


class LazyActor:
    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        self.fn = fn
        self.options = options
        self.actor_name = options.pop("actor_name", fn.__name__)
        self._actor: dramatiq.Actor | None = None
        _lazy_actors.append(self)

    def bind(self, broker: dramatiq.Broker) -> None:
        self._actor = dramatiq.actor(
            self.fn, actor_name=self.actor_name, broker=broker, **self.options
        )

    @property
    def actor(self) -> dramatiq.Actor:
        if self._actor is None:
            raise RuntimeError(f"actor {self.actor_name} is not bound to a broker yet")
        return self._actor

    def send(self, *args: Any, **kwargs: Any) -> dramatiq.Message:
        return self.actor.send(*args, **kwargs)

    def send_with_options(self, **kwargs: Any) -> dramatiq.Message:
        return self.actor.send_with_options(**kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


def actor(**options: Any) -> Callable[[Callable[..., Any]], LazyActor]:
    def decorate(fn: Callable[..., Any]) -> LazyActor:
        return LazyActor(fn, dict(options))

    return decorate


def make_broker(url: str) -> dramatiq.Broker:
    scheme = urlsplit(url).scheme
    if scheme == "stub":
        return StubBroker()
    if scheme in ("redis", "rediss"):
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=url)
    if scheme in ("amqp", "amqps"):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=url)
    raise ValueError(f"unsupported broker URL scheme {scheme!r}")


def use_broker(broker: dramatiq.Broker) -> dramatiq.Broker:
    """Make ``broker`` the global one and (re)bind every declared actor to it."""
    dramatiq.set_broker(broker)
    for lazy in _lazy_actors:
        lazy.bind(broker)
    return broker


def check_broker(broker: dramatiq.Broker) -> None:
    """Raise if the broker cannot be reached."""
    if isinstance(broker, StubBroker):
        return
    from dramatiq.brokers.redis import RedisBroker

    if isinstance(broker, RedisBroker):
        broker.client.ping()
        return
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    if isinstance(broker, RabbitmqBroker):
        import pika

        parameters = broker.parameters
        if isinstance(parameters, list):
            parameters = parameters[0]
        connection = pika.BlockingConnection(parameters)
        connection.close()
        return
    raise RuntimeError(f"cannot check broker {type(broker).__name__}")


class InProcessWorker:
    """A Dramatiq worker running as threads of the web process (embedded mode)."""

    _lock = threading.Lock()

    def __init__(self, broker: dramatiq.Broker, threads: int = 2) -> None:
        self.worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
        self._companions: list[Callable[[], Any]] = []

    def start(self) -> InProcessWorker:
        self.worker.start()
        return self

    def start_companion(self, start: Callable[[], Callable[[], Any]]) -> None:
        """Start a background service (e.g. a scheduler) that stops with this worker."""
        self._companions.append(start())

    def stop(self) -> None:
        while self._companions:
            self._companions.pop()()
        self.worker.stop()


def includeme(config: Any) -> None:
    settings = config.get_settings()
    broker = settings.get("prefcenter.broker") or make_broker(settings["dramatiq.broker_url"])
    load_task_modules()
    use_broker(broker)
    config.registry["broker"] = broker
