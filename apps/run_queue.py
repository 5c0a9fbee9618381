"""The upload API's runs, one at a time in arrival order, with a bounded wait.

Every upload is one flow run over the embedded store, which takes one writer at a time; letting
each request thread race for it would wake them in no particular order and pile up threads
without limit. Instead a request is *admitted* (or refused at once, when ``capacity`` runs are
already waiting: the caller answers 503 with ``retry_after``), and one worker thread runs the
admitted runs first come, first served.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class QueueFull(Exception):
    """No room for another run; ``retry_after`` is an estimate in whole seconds."""

    def __init__(self, waiting: int, retry_after: int) -> None:
        super().__init__(f"{waiting} upload runs are already waiting; retry in {retry_after} s")
        self.waiting = waiting
        self.retry_after = retry_after


class RunQueue:
    """Runs submitted jobs one at a time, first come first served; at most ``capacity`` wait."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._jobs: queue.Queue[tuple[Callable[[], Any], Future] | None] = queue.Queue(capacity)
        self._lock = threading.Lock()
        self._running = False
        # A moving average of how long a run takes, for Retry-After.
        self._average_s = 10.0
        self._worker = threading.Thread(target=self._work, name="upload-runs", daemon=True)
        self._worker.start()

    @property
    def waiting(self) -> int:
        return self._jobs.qsize()

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the runs ahead times a typical run."""
        ahead = self.waiting + (1 if self._running else 0)
        return max(1, min(600, math.ceil(self._average_s * max(1, ahead))))

    def submit(self, job: Callable[[], Any]) -> Future:
        """Queue ``job``; its future resolves when it has run. ``QueueFull`` when there is no room."""
        future: Future = Future()
        try:
            self._jobs.put_nowait((job, future))
        except queue.Full:
            raise QueueFull(self.waiting, self.retry_after()) from None
        return future

    def _work(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, future = item
            if not future.set_running_or_notify_cancel():
                continue
            self._running = True
            started = time.monotonic()
            try:
                future.set_result(job())
            except BaseException as exc:  # the caller decides what a failure means
                future.set_exception(exc)
            finally:
                self._running = False
                self._average_s = 0.7 * self._average_s + 0.3 * (time.monotonic() - started)

    def close(self, timeout: float | None = None) -> None:
        """Stop after the admitted runs (waits up to ``timeout`` for them)."""
        while True:  # a full queue still takes the stop marker once a run finishes
            try:
                self._jobs.put(None, timeout=1.0)
                break
            except queue.Full:
                if not self._worker.is_alive():
                    return
        self._worker.join(timeout)
