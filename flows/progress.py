"""Progress of a running flow: a Prefect progress artifact, plus in-process listeners.

The CLI registers a listener to draw its progress bar when it runs the flow in-process.
"""

from __future__ import annotations

from collections.abc import Callable

from prefect.artifacts import create_progress_artifact, update_progress_artifact

Listener = Callable[[int, int, bool], None]  # (files done, files found, listing finished)
_listeners: list[Listener] = []


def add_listener(listener: Listener) -> None:
    _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


class RunProgress:
    """Files done out of files found so far (the listing streams, so the total grows)."""

    def __init__(self, description: str) -> None:
        self.done = 0
        self.found = 0
        self.listing_done = False
        self._artifact = create_progress_artifact(0.0, description=description)

    def update(self, *, done: int = 0, found: int = 0, listing_done: bool = False) -> None:
        self.done += done
        self.found += found
        self.listing_done = self.listing_done or listing_done
        percent = 100.0 * self.done / self.found if self.found else 0.0
        if not self.listing_done:
            percent = min(percent, 99.0)  # the total is not known yet
        update_progress_artifact(self._artifact, percent)
        for listener in list(_listeners):
            listener(self.done, self.found, self.listing_done)
