"""Parse PDFs in worker processes with a time and a memory limit.

Real corpora hold PDFs that take 20 s and 400 MB for one page, and fuzzed files that crash
deep inside the parser. Each PDF is parsed in a pebble worker process: one that uses more than
``timeout_s`` seconds **of CPU** is stopped (``failed``/``timeout``), one that needs more than
``memory_mb`` of address space (plus ``ocr.OCR_ADDRESS_SPACE_MB`` once it has loaded the OCR
engine) gets a ``MemoryError`` (``failed``/``too_large``), one that dies
(segfault, killed) costs its own file only (``failed``/``parser_crashed``). Pebble replaces dead
workers; the caller's threads keep embedding other files meanwhile.

The time limit counts CPU, not wall time: on a machine busy with other work (or with the
model beside it) a parse may wait far longer than it computes — a wall-clock limit failed
ordinary PDFs there. A wall-clock backstop (``WALL_FACTOR`` times the
limit) still kills a parse that hangs without computing.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from types import FrameType

from tasks.core.errors import FileRejected
from tasks.core.models import Document, Reason
from tasks.core.ocr import OCR_ADDRESS_SPACE_MB, OcrConfig, OcrPageTimeout

log = logging.getLogger(__name__)

# Workers are recycled now and then: pypdf's caches and a fragmented heap do not accumulate.
TASKS_PER_WORKER = 200
# Address space held back during a parse and released on MemoryError, so the worker can still
# build and send its answer; added on top of the configured limit.
RESERVE_BYTES = 32 * 1024 * 1024
# The wall-clock backstop: this many times the CPU limit, plus a minute.
WALL_FACTOR, WALL_SLACK_S = 10, 60.0
# sockaddr_un.sun_path: 107 bytes and a NUL. The forkserver binds its socket at
# <temporary folder>/pymp-XXXXXXXX/listener-XXXXXXXX, 32 bytes past the folder.
SUN_PATH_MAX, FORKSERVER_SUFFIX, LISTENER_SUFFIX = 107, 32, 18
SHORT_TEMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
_socket_dir_lock = threading.Lock()


class _OutOfCpu(BaseException):
    """Raised in a worker when its parse used up its CPU time. A ``BaseException``: pypdf and
    the page loop catch ``Exception`` to survive broken pages, and must not swallow this."""


def _out_of_cpu(signum: int, frame: FrameType | None) -> None:
    raise _OutOfCpu


def _limit_memory(memory_mb: int) -> None:
    """Worker initializer: cap the address space, so a runaway parse fails with MemoryError.
    The worker keeps its parent's CPU priority (``scheduling`` says why)."""
    import resource

    signal.signal(signal.SIGPROF, _out_of_cpu)
    # Imported here, not in a file's CPU time.
    import pypdf  # noqa: F401

    import tasks.core.readers  # noqa: F401

    limit = memory_mb * 1024 * 1024 + RESERVE_BYTES
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


_ocr_memory_allowed = False


def _allow_ocr_memory() -> None:
    """Raise this worker's address-space limit by what the OCR engine reserves, once, before
    its first OCR page: the engine stays loaded, so the limit stays raised (parsing keeps its
    own ``memory_mb`` on top of it). Workers that never OCR keep the plain limit."""
    global _ocr_memory_allowed
    import resource

    if _ocr_memory_allowed:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        raised = soft + OCR_ADDRESS_SPACE_MB * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (raised if hard == resource.RLIM_INFINITY
                                                else min(raised, hard), hard))
    _ocr_memory_allowed = True


@contextlib.contextmanager
def _page_cpu_budget(seconds: float) -> Iterator[None]:
    """One OCR page's own CPU budget (``OcrPageTimeout`` beyond it); the parse's remaining
    budget is set aside meanwhile and restored after, so OCR does not eat into it."""
    _allow_ocr_memory()
    remaining, _ = signal.getitimer(signal.ITIMER_PROF)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    except _OutOfCpu:
        raise OcrPageTimeout from None
    finally:
        signal.setitimer(signal.ITIMER_PROF, max(remaining, 0.001))


def _parse_pdf(data: bytes, max_pages: int, max_chars: int | None, memory_mb: int,
               cpu_s: float, ocr: OcrConfig | None = None) -> Document:
    """Runs in the worker (in its main thread, where SIGPROF's handler runs)."""
    import mmap

    from tasks.core.readers import read_pdf

    # Untouched anonymous memory: it costs address space only (no page is ever written).
    reserve = mmap.mmap(-1, RESERVE_BYTES)
    # SIGPROF once this process has used ``cpu_s`` more seconds of CPU.
    signal.setitimer(signal.ITIMER_PROF, cpu_s)
    try:
        return read_pdf(data, max_pages=max_pages, max_chars=max_chars, ocr=ocr,
                        page_budget=_page_cpu_budget)
    except _OutOfCpu:
        raise FileRejected(Reason.TIMEOUT, f"parsing used more than {cpu_s:g} s of CPU "
                                           "(INGEST_PARSE_TIMEOUT); abandoned") from None
    except MemoryError:
        reserve.close()
        raise FileRejected(Reason.TOO_LARGE, f"parsing needed more than {memory_mb} MB "
                                             "(INGEST_PARSE_MEMORY_MB); abandoned") from None
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        if not reserve.closed:
            reserve.close()


class ParsePool:
    """A process pool that parses PDFs under limits; thread-safe. A process holds one
    (``resources.Resources.parse_pdf``), started on first use.

    A pebble pool that breaks stays broken: a worker killed while idle (the kernel's OOM
    killer, an operator) or one that cannot be started leaves every later ``schedule`` failing
    — in a long-lived API process, every later PDF. So a broken pool is replaced by a new one
    and the file that met the breakage is parsed again there, once; if the new pool breaks on
    it too, the file fails as ``parser_crashed`` (it may be what breaks them).
    """

    def __init__(self, *, workers: int, timeout_s: float, memory_mb: int) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        #: How many times a broken pool was replaced (tests and logs read it).
        self.restarts = 0
        self._lock = threading.Lock()
        self._closed = False
        self._in_flight = 0
        self._pool = self._new_pool()

    def _new_pool(self):
        from pebble import ProcessPool

        _fit_socket_dir()
        # forkserver: workers are forked from a small clean process, not from this one with its
        # model, threads and sockets (fork would copy those; spawn would start slower).
        return ProcessPool(max_workers=self.workers, max_tasks=TASKS_PER_WORKER,
                           initializer=_limit_memory, initargs=(self.memory_mb,),
                           context=multiprocessing.get_context("forkserver"))

    @property
    def busy(self) -> int:
        """How many workers are parsing now (files waiting for one not counted)."""
        return min(self._in_flight, self.workers)

    @property
    def healthy(self) -> bool:
        """Whether the current pool takes work (false once it broke, until the next parse
        replaces it)."""
        return self._pool.active

    def read_pdf(self, data: bytes, *, max_pages: int, max_chars: int | None = None,
                 ocr: OcrConfig | None = None) -> Document:
        """Parse in a worker; limits and crashes become ``FileRejected``."""
        # OCR pages have CPU budgets of their own: the backstop allows for all of them.
        ocr_s = 0.0 if ocr is None or ocr.mode == "off" else ocr.page_timeout_s * ocr.max_pages
        wall_s = (self.timeout_s + ocr_s) * WALL_FACTOR + WALL_SLACK_S
        args = (data, max_pages, max_chars, self.memory_mb, self.timeout_s, ocr)
        with self._lock:
            self._in_flight += 1
        try:
            return self._schedule(args, wall_s)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _schedule(self, args: tuple, wall_s: float) -> Document:
        from pebble import ProcessExpired

        broken: BaseException | None = None
        for _ in range(2):
            pool = self._pool
            try:
                future = pool.schedule(_parse_pdf, args=args, timeout=wall_s)
            except RuntimeError as exc:  # broken before this file (or closed: re-raised below)
                broken = exc
            else:
                try:
                    return future.result()
                except FutureTimeout:
                    raise FileRejected(Reason.TIMEOUT, f"parsing took more than {wall_s:g} s of "
                                       "wall time (10 × the CPU limits + 60); abandoned") from None
                except ProcessExpired as exc:
                    how = (f"signal {signal.Signals(-exc.exitcode).name}"
                           if exc.exitcode and exc.exitcode < 0 else f"exit code {exc.exitcode}")
                    raise FileRejected(Reason.PARSER_CRASHED,
                                       f"the parser process died ({how})") from None
                except BrokenProcessPool as exc:  # broke while this file waited or ran
                    broken = exc
            self._replace(pool, broken)
        raise FileRejected(Reason.PARSER_CRASHED, "the parse workers broke twice on this file "
                                                  f"({_describe(broken)})")

    def _replace(self, pool, error: BaseException | None) -> None:
        """Put a new pool in place of ``pool`` if it is still the current one (threads that
        met the same breakage replace it once); a closed ``ParsePool`` re-raises ``error``."""
        with self._lock:
            if self._closed:
                raise error or RuntimeError("the parse pool is closed")
            if self._pool is not pool:
                return
            log.warning("the PDF parse workers broke (%s); starting new ones", _describe(error))
            self._pool = self._new_pool()
            self.restarts += 1
        pool.stop()
        pool.join(timeout=10)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool = self._pool
        pool.stop()
        pool.join(timeout=10)


def _fit_socket_dir() -> None:
    """Give multiprocessing a folder short enough for the forkserver's socket.

    Python before 3.14 puts it in the temporary folder (``TMPDIR``) whatever its length
    (CPython #132124): past 75 bytes the socket cannot be bound, no parse worker ever starts
    and every PDF fails — seen under pytest-xdist, where a test's ``TMPDIR`` is ~77 bytes, and
    as likely in a deep container or CI workspace. Then a ``pymp-`` folder in the first short
    system folder holds it (removed at exit, as multiprocessing does its own).
    """
    import shutil
    import tempfile
    from multiprocessing import process, util

    with _socket_dir_lock:
        config = process.current_process()._config  # where get_temp_dir() keeps its choice
        chosen = config.get("tempdir")
        needed = (len(os.fsencode(chosen)) + LISTENER_SUFFIX if chosen
                  else len(os.fsencode(tempfile.gettempdir())) + FORKSERVER_SUFFIX)
        if needed <= SUN_PATH_MAX:
            return
        for base in SHORT_TEMP_DIRS:
            if len(base) + FORKSERVER_SUFFIX <= SUN_PATH_MAX and os.access(base, os.W_OK | os.X_OK):
                folder = tempfile.mkdtemp(prefix="pymp-", dir=base)
                util.Finalize(None, shutil.rmtree, args=(folder, True), exitpriority=-100)
                config["tempdir"] = folder
                log.info("the temporary folder is too long for a socket (%d bytes): parse "
                         "workers are started through %s", needed, folder)
                return
        log.warning("the temporary folder is too long for the parse workers' socket (%d bytes "
                    "of %d) and none of %s is writable: set TMPDIR to a shorter folder",
                    needed, SUN_PATH_MAX, ", ".join(SHORT_TEMP_DIRS))


def _describe(error: BaseException | None) -> str:
    """An error and what caused it, on one line (pebble's ``BrokenProcessPool`` is often
    empty: the ``OSError`` behind it says what happened)."""
    if error is None:
        return "unknown error"
    text = type(error).__name__ + (f": {error}" if str(error) else "")
    cause = error.__cause__ or error.__context__
    return text if cause is None else f"{text}, caused by {type(cause).__name__}: {cause}"


def isolation_available() -> bool:
    """Daemonic processes (e.g. some Dask workers) may not start children: parse in-process."""
    return not multiprocessing.current_process().daemon
