"""The process's C heap: giving freed memory back to the operating system."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from functools import lru_cache
from pathlib import Path

#: The kernel's transparent huge page mode: ``always [madvise] never``, the bracketed one in use.
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
#: torch's switch (read once, when torch is loaded): its CPU allocations of 2 MB or more are
#: advised to the kernel as huge-page memory (``madvise(MADV_HUGEPAGE)``).
TORCH_THP = "THP_MEM_ALLOC_ENABLE"
#: oneDNN's switch (read by each copy of oneDNN — torch's, OpenVINO's CPU plugin's — when it
#: first caches a kernel): how many kernels made for given shapes it keeps.
ONEDNN_CACHE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
#: The kernels each oneDNN keeps in this project's processes (its default: 1,024).
ONEDNN_CACHE_ENTRIES = 256
#: glibc's own setting of the number of heaps (arenas) its threads allocate from.
ARENA_MAX = "MALLOC_ARENA_MAX"
#: The arenas a process of this project allocates from (``limit_malloc_arenas``).
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number for it (malloc.h)


@lru_cache(maxsize=1)
def _libc():
    """glibc, or ``None`` on other C libraries."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 (glibc's, absent elsewhere)
        return libc
    except (OSError, AttributeError):
        return None


def limit_malloc_arenas(environ: Mapping[str, str] = os.environ, arenas: int = MALLOC_ARENAS) -> bool:
    """At a process's start, before its threads: have glibc's threads share ``arenas`` heaps,
    unless the environment sets ``MALLOC_ARENA_MAX`` itself; returns whether it was set.

    glibc gives each new thread a heap of its own (up to 8 per core; a thread that ended leaves
    its heap to the next), and memory freed in one heap serves only the threads of that heap.
    The pipeline's threads (the model's, the stages', Qdrant Edge's, OpenVINO's) allocate and free large
    short-lived blocks — a group's texts, token arrays, activations, index builds — in heaps of
    their own: over a run each heap keeps the pages its live blocks are scattered over, and the
    process's resident memory grew with the run while what it held did not (glibc's own count
    of memory in use stayed at ~360 MB). ``ingest run`` of 10 copies of the peers bench's bulk
    batch (110 files, default runtime, peak by ``wait4``, December 5): 1,259 MB in 2 heaps
    against 1,353 MB (949 against 940 s); the 11-document batch alone 1,053 MB twice against
    1,064 and 1,090 MB (104-106 against 101-102 s): 10x the files 1.20x against 1.24-1.27x.
    Heaps made before the call stay; glibc reads the limit when it first needs a ninth heap and
    never again, hence at the start.
    """
    libc = _libc()
    if ARENA_MAX in environ or libc is None:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arenas))


def release_freed_memory() -> None:
    """Give the heap's free pages back to the OS (glibc only; elsewhere a no-op).

    The model's activations are large, short-lived and of ever-changing shapes (batches are
    planned shortest first, so each is a little longer than the last): glibc cannot reuse the
    freed blocks for the next, larger ones and keeps them. Trimmed once per call, a call of
    3,174 real chunks in fp32 peaked at 1.73 GB resident (from 0.53 GB before it; 1.31 GB on
    OpenVINO); trimmed after every batch, 0.76 GB (0.88 GB). Called after every batch: a call
    costs ~1.6 ms against ~500 ms for a full batch, and the batch after it is no slower
    (measured 522 vs 525 ms). The embedded store calls it after each index build, whose
    graph and segment buffers are freed at once.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


#: Held by whichever memory-heavy step runs: a model batch (its activations) or the embedded
#: store's index build. They run in different threads (the model's, a store task's) and each
#: holds its memory for up to a second; taken together, their peaks add up.
_HEAVY_STEP = threading.Lock()


@contextlib.contextmanager
def heavy_step() -> Iterator[None]:
    """One memory-heavy step at a time in this process, its freed heap given back after it.

    Qdrant Edge's segment builder has the 32 MB page files of the new segment's BM25 vector
    storages resident whole (zeros past the data included; ``/proc/<pid>/smaps`` during
    a build of 300 points): a build holds ~60-100 MB more for about a second, on top of
    whatever a model batch holds at that moment. Serialised, a build waits for the batch in
    progress (~0.5 s) and the model for the build (~1 s per 4,000 points). The flow alone on
    1,000 generated files (two builds), fresh processes alternating, December 5: peak RSS
    839-852 MB (4 runs) against 853-919 MB (4 runs) without the gate, no slower (261 and 275 s
    against 263 and 279 s in alternating rounds); on 100 files (no build) 720-748 MB.
    """
    with _HEAVY_STEP:
        try:
            yield
        finally:
            release_freed_memory()


def thp_mode(path: Path = THP_MODE) -> str | None:
    """The kernel's transparent huge page mode (``always``, ``madvise``, ``never``), or ``None``
    where there is none to read (another OS, a kernel without THP)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def advise_huge_pages_to_torch(environ: MutableMapping[str, str] = os.environ,
                               mode_file: Path = THP_MODE) -> bool:
    """Before torch is loaded: have it ask for huge pages for its large allocations (the model's
    activations), unless the environment already says otherwise or the kernel would refuse;
    returns whether it was asked.

    Every batch's activations are faulted in again after the heap is trimmed
    (``release_freed_memory``), 4 kB at a time: ~1.3 million page faults for 800 real chunks
    in fp32. In 2 MB pages, ~0.3 million, and the process's system time half (1.6-2.3 s
    against 3.5-5.3 s for those chunks); whole fp32 runs of 3,018 real chunks: 9-11 against
    18-21 CPU-s of system time, peak memory unchanged (December 4). Only torch's allocator
    reads this; OpenVINO's runtimes fault far less (~0.2 million) and are unaffected.
    """
    if TORCH_THP in environ or thp_mode(mode_file) not in ("always", "madvise"):
        return False
    environ[TORCH_THP] = "1"
    return True


def bound_onednn_kernel_cache(environ: MutableMapping[str, str] = os.environ,
                              entries: int = ONEDNN_CACHE_ENTRIES) -> bool:
    """Before torch and OpenVINO first run the model: have oneDNN keep ``entries`` kernels made
    for given shapes instead of 1,024, unless the environment already sets it; returns whether
    it was set.

    Batches are planned padding-free, so nearly every one has a shape of its own, and on a CPU
    with AMX the bf16 kernels oneDNN compiles for each shape are large: OpenVINO's
    ``bf16-openvino`` runtime (the default there) kept ~80 MB more of the heap in use after
    embedding 3,018 real chunks in random groups twice (anonymous memory +186-191 MB; at 256
    entries +49-55, at 16-128 +25-34; fp32 runtimes +25 either way). ``ingest run`` of the peers
    bench's bulk batch copied 10 times peaked at 1,235-1,245 MB against 1,347 MB (the batch
    once: 1,051-1,059 against 1,065 MB; December 5, AMX Xeon). The cost is kernels made again: that
    runtime's embedding ~3-4% slower (median 50.2 against 48.1 s for 9,054 chunks; 16-128
    entries the same), fp32-openvino unchanged (91.7-92.4 against 91.3-93.3 s). OpenVINO's
    own cache of shape-specific executors is bounded separately
    (``openvino_runtime.RUNTIME_CACHE_ENTRIES``).
    """
    if ONEDNN_CACHE in environ:
        return False
    environ[ONEDNN_CACHE] = str(entries)
    return True
