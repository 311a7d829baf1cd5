"""Work a server repeats in the background (reloading models, refreshing candidates): on a
daemon thread, every `period_s`, never stopped by one failure.

>>> import time
>>> calls = []
>>> job = Periodic("count", 0.01, lambda: calls.append(1))
>>> job.start(); time.sleep(0.1); job.stop()
>>> len(calls) > 2
True
"""
from __future__ import annotations

import logging
import threading

LOG = logging.getLogger(__name__)


class Periodic:
    """Calls `work()` now (`start`), then every `period_s` seconds until `stop()`."""

    def __init__(self, name: str, period_s: float, work):
        self.name, self.period_s, self.work = name, period_s, work
        self._stop = threading.Event()
        self._thread = None

    def start(self) -> None:
        self.work()  # the first time in the caller: a server starts with its models loaded
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self):
        said = None
        while not self._stop.wait(self.period_s):
            try:
                self.work()
                said = None
            except Exception as e:  # a store that is briefly away must not end the refreshes
                if repr(e) != said:  # once per kind of failure, not every period
                    LOG.exception("%s failed; serving what was loaded", self.name)
                    said = repr(e)
