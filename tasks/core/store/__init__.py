"""The vector store: one interface with the ingest semantics, two backends, a run lock.

* ``base`` — ``VectorStore``: collection checks, the crash-safe per-file write, head lookups,
  prune, export, implemented once on a handful of backend primitives;
* ``edge`` — Qdrant Edge, the Qdrant engine in-process (the embedded default);
* ``qdrant`` — qdrant-client: a Qdrant server (``QDRANT_URL``) or its local mode;
* ``lock`` — the cross-process run lock of an embedded store.

Backends import ``base``, never this package's ``open_store``, so there is no import cycle.
"""

from __future__ import annotations

from tasks.core.settings import StoreLocation
from tasks.core.store.base import StoredPoint, VectorStore, store_in_use
from tasks.core.store.lock import exclusive_run

__all__ = ["StoredPoint", "VectorStore", "exclusive_run", "open_store", "store_in_use"]


def open_store(location: StoreLocation, *, api_key: str | None = None) -> VectorStore:
    """A new store object for ``location``; a process normally holds one per location
    (``tasks.core.resources``). ``api_key`` is for a Qdrant server only."""
    if location.kind == "edge":
        from tasks.core.store.edge import EdgeStore

        return EdgeStore(location)
    from tasks.core.store.qdrant import QdrantClientStore

    return QdrantClientStore(location, api_key=api_key)
