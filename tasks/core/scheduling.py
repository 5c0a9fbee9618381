"""CPU scheduling: one model call at a time, on one thread.

Every model call runs on one dedicated thread (``ModelThread``), in order: torch and OpenVINO
already use every core, and concurrent calls only contend. The threads that read, parse, chunk
and write, and the PDF parse workers, run at the same CPU priority as the model. They once ran
at ``nice 10`` so that the model would win every core it wanted; measured on this project's
2-core machine (the bench's 11 real documents, December 4), that made no measurable difference
on a quiet machine (four interleaved pairs: wall time at normal priority 0.955–1.032× the
niced run's) and cost far more beside other work: with two other busy programs, the feeders
starved and so did the model waiting on them (one batch past 12 minutes, the process at ~11%
of a core, against 273 s at normal priority), and the parse workers, niced twice over (a
relative ``nice`` on top of the niced thread that started them), took 307 s for a one-page OCR
against 7 s. A busy machine is the normal case, so nobody is niced.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class ModelThread:
    """One thread that runs every model call, in order."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._executor.submit(lambda: None).result()  # start it now

    def run(self, call: Callable[[], T]) -> T:
        """Run ``call`` on the model thread and return its result (calls queue up)."""
        return self._executor.submit(call).result()

    def close(self) -> None:
        self._executor.shutdown(wait=True)
