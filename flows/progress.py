"""Progress of a running flow: a Prefect progress artifact, plus an optional in-process listener.

The CLI draws its progress bar through ``listening(...)`` when it runs the flow in its own
process; the listener lives in a context variable, so it belongs to that call alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

from prefect.artifacts import create_progress_artifact, update_progress_artifact

Listener = Callable[[int, int, bool], None]  # (files done, files found, listing finished)
_listener: ContextVar[Listener | None] = ContextVar("ingest_progress_listener", default=None)


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call ``listener`` on progress of flows run inside this block (same thread/context)."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


class RunProgress:
    """Files done out of files found so far (the listing streams, so the total grows)."""

    def __init__(self, description: str) -> None:
        self.done = 0
        self.found = 0
        self.listing_done = False
        self._listener = _listener.get()
        self._artifact = create_progress_artifact(0.0, description=description)

    def update(self, *, done: int = 0, found: int = 0, listing_done: bool = False) -> None:
        self.done += done
        self.found += found
        self.listing_done = self.listing_done or listing_done
        percent = 100.0 * self.done / self.found if self.found else 0.0
        if not self.listing_done:
            percent = min(percent, 99.0)  # the total is not known yet
        update_progress_artifact(self._artifact, percent)
        if self._listener is not None:
            self._listener(self.done, self.found, self.listing_done)
