"""The cross-process run lock of an embedded store."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from tasks.core.errors import StoreError
from tasks.core.settings import StoreLocation


@contextlib.contextmanager
def exclusive_run(location: StoreLocation, *, wait_s: float,
                  on_wait: Callable[[], None] | None = None,
                  on_release: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an embedded store for a whole run, across processes; a server needs no hold.

    An embedded store admits one process at a time, and runs from several deployments
    (schedule, events, UI) may start together: the later ones wait here for up to ``wait_s``
    instead of failing on the store's own lock. ``on_release`` runs before the lock is released:
    the caller closes its store handle there, since the process may live on for a while
    (Prefect's teardown) and the next run, in another process, needs the store's own lock too.
    """
    if location.kind == "qdrant-server":
        yield
        return
    from filelock import FileLock, Timeout

    Path(location.path).mkdir(parents=True, exist_ok=True)
    lock = FileLock(Path(location.path) / ".ingest-run.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait()
        try:
            lock.acquire(timeout=wait_s)
        except Timeout:
            raise StoreError(f"the embedded store at {location.path} is still in use by another "
                             f"run after {wait_s:.0f}s (INGEST_STORE_WAIT_S)") from None
    try:
        yield
    finally:
        try:
            if on_release is not None:
                on_release()
        finally:
            lock.release()
