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

Instead the model gives up a core while this process's other heavy work holds it
(``ModelThread.threads``): torch's threads meet at a barrier after every operator, and with a
PDF parse worker on one of two cores they wait there for each other's turn on the other one.
Measured on the bench's 11 real documents (fp32, December 5, AMX Xeon): the first group's 130
chunks, embedded while the Debian Reference was parsed, took 8.6-8.7 s on two threads and
5.2-5.8 s on one; whole runs 0.94-0.98x the wall time of two threads throughout (3 interleaved
pairs). OpenVINO's threads are fixed when it compiles: only torch's are adjusted.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class ModelThread:
    """One thread that runs every model call, in order.

    ``busy_elsewhere`` says how many cores this process's other heavy work (PDF parse workers
    at work) holds right now; it is called from the model thread between batches, so it must
    not block.
    """

    def __init__(self, busy_elsewhere: Callable[[], int] | None = None) -> None:
        self._busy_elsewhere = busy_elsewhere or (lambda: 0)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._executor.submit(lambda: None).result()  # start it now

    def run(self, call: Callable[[], T]) -> T:
        """Run ``call`` on the model thread and return its result (calls queue up)."""
        return self._executor.submit(call).result()

    def threads(self, most: int) -> int:
        """How many threads the model's next batch should use: ``most`` (what the runtime
        was given), less one for each core busy elsewhere in this process, at least one."""
        return max(1, most - self._busy_elsewhere())

    def close(self) -> None:
        self._executor.shutdown(wait=True)
