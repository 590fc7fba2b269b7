"""Running pieces of a test at the same time, in threads of their own."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def run_together(work: Callable[[T], object], arguments: Sequence[T]) -> None:
    """``work(argument)`` for each argument, each in a thread, all released at once by a
    barrier; fails with every exception the threads raised."""
    barrier = threading.Barrier(len(arguments))
    errors: list[BaseException] = []

    def run(argument: T) -> None:
        try:
            barrier.wait(timeout=30)
            work(argument)
        except BaseException as exc:  # reported below, in the test's own thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(a,)) for a in arguments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
