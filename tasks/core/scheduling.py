"""CPU scheduling: the embedding model first.

On a CPU-bound machine the model is the bottleneck, and torch's threads wait for each other at
every operation, so work that preempts one of them stalls them all. The model therefore runs on
one dedicated thread (``ModelThread``) at normal priority, and the threads that read, parse,
chunk and write lower their own priority (``background_thread``; PDF parse workers do the same
for their processes). Linux schedules threads individually and a thread inherits its creator's
priority, so the model thread is started before any thread lowers its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

#: Niceness of the threads and processes that feed the model (10 of 19: they still run, but
#: the model's threads win whenever both want a core).
BACKGROUND_NICE = 10


def background_thread() -> None:
    """Lower the calling thread's CPU priority to ``BACKGROUND_NICE`` (once; raising it back
    would need privileges). A no-op where threads cannot be reniced."""
    try:
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < BACKGROUND_NICE:
            os.setpriority(os.PRIO_PROCESS, tid, BACKGROUND_NICE)
    except (OSError, AttributeError):  # not Linux, or not allowed: keep the default priority
        pass


class ModelThread:
    """One thread that runs every model call, in order, at the priority it was started with."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._executor.submit(lambda: None).result()  # start it now, from this thread

    def run(self, call: Callable[[], T]) -> T:
        """Run ``call`` on the model thread and return its result (calls queue up)."""
        return self._executor.submit(call).result()

    def close(self) -> None:
        self._executor.shutdown(wait=True)
