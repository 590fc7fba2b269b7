"""The scheduler: :func:`campaigns.tasks.tick` every few seconds, in one thread.

Embedded mode runs it inside the web process (started with the in-process worker);
production runs it as ``prefcenter scheduler`` (one per installation is enough, more
are harmless: queuing is a compare-and-set and scheduled campaigns are locked).
"""

from __future__ import annotations

import logging
import threading

from . import tasks

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        try:
            return tasks.tick()
        except Exception:  # one failed pass must not stop the scheduler
            log.exception("campaign scheduler pass failed")
            return 0

    def run(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval)

    def start(self) -> Scheduler:
        self._thread = threading.Thread(target=self.run, name="campaign-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
