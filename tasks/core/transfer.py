"""Moving points out of and between stores without re-embedding: export and migration."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from tasks.core.errors import ConfigError
from tasks.core.sparse import SparseEncode
from tasks.core.store.base import VectorStore


def export_records(store: VectorStore, collection: str, *, vectors: bool) -> Iterator[dict]:
    """Every point as ``{"id", "payload"[, "vector", "sparse"]}``, page by page; ``sparse``
    holds the keyword (BM25) vectors by name, each as ``{"indices", "values"}`` (``bm25``: the
    words, ``grams``: long words' n-grams; absent in a collection built before hybrid search)."""
    if store.collection_dimension(collection) is None:
        raise ConfigError(f"collection {collection!r} does not exist in {store.location.describe()}")
    for point in store.iter_points(collection, with_vectors=vectors):
        record = {"id": point.id, "payload": point.payload}
        if vectors:
            record["vector"] = point.vector
            if point.sparse is not None:
                record["sparse"] = {name: {"indices": list(v.indices), "values": list(v.values)}
                                    for name, v in point.sparse.named().items()}
        yield record


def copy_collection(source: VectorStore, target: VectorStore, collection: str, *,
                    encode: SparseEncode, batch_size: int = 512) -> int:
    """Copy every point (IDs, dense and keyword vectors, payloads) into ``target``; returns how
    many. Points of a collection built by an earlier version (without some keyword vectors)
    get them from their payload text (``encode``) on the way.

    Idempotent: the same IDs overwrite themselves, so an interrupted copy can be run again.
    """
    dimension = source.collection_dimension(collection)
    if dimension is None:
        raise ConfigError(f"collection {collection!r} does not exist in {source.location.describe()}")
    target.ensure_collection(collection, dimension, encode=encode)
    complete = source.shape(collection).complete
    copied, batch = 0, []

    def flush() -> None:
        nonlocal copied, batch
        missing = [p for p in batch if p.sparse is None or not complete]
        filled = dict(zip((p.id for p in missing), encode([p.payload.get("text", "") for p in missing])))
        target.upsert_points(collection, [replace(p, sparse=filled[p.id]) if p.id in filled else p
                                          for p in batch])
        copied, batch = copied + len(batch), []

    for point in source.iter_points(collection, with_vectors=True, page=batch_size):
        batch.append(point)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return copied
