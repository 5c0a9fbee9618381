"""Moving points out of and between stores without re-embedding: export and migration."""

from __future__ import annotations

from collections.abc import Iterator

from tasks.core.errors import ConfigError
from tasks.core.store.base import VectorStore


def export_records(store: VectorStore, collection: str, *, vectors: bool) -> Iterator[dict]:
    """Every point as ``{"id", "payload"[, "vector"]}``, page by page."""
    if store.collection_dimension(collection) is None:
        raise ConfigError(f"collection {collection!r} does not exist in {store.location.describe()}")
    for point in store.iter_points(collection, with_vectors=vectors):
        record = {"id": point.id, "payload": point.payload}
        if vectors:
            record["vector"] = point.vector
        yield record


def copy_collection(source: VectorStore, target: VectorStore, collection: str, *,
                    batch_size: int = 512) -> int:
    """Copy every point (IDs, vectors, payloads) into ``target``; returns how many.

    Idempotent: the same IDs overwrite themselves, so an interrupted copy can be run again.
    """
    dimension = source.collection_dimension(collection)
    if dimension is None:
        raise ConfigError(f"collection {collection!r} does not exist in {source.location.describe()}")
    target.ensure_collection(collection, dimension)
    copied, batch = 0, []
    for point in source.iter_points(collection, with_vectors=True, page=batch_size):
        batch.append(point)
        if len(batch) >= batch_size:
            target.upsert_points(collection, batch)
            copied, batch = copied + len(batch), []
    if batch:
        target.upsert_points(collection, batch)
        copied += len(batch)
    return copied
