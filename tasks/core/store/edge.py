"""Qdrant Edge backend (``qdrant-edge-py``): the Qdrant engine in-process, the embedded default.

One shard folder per collection under ``<INGEST_QDRANT_PATH>/edge/<collection>``: write-ahead
log (durable through a crash), memory-mapped vectors and payloads, and an HNSW index built by
``optimize()``. Points not yet indexed are searched exactly, so a search right after a run is
correct before any index exists; ``maintain`` builds the index once enough points wait for it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tasks.core.errors import CollectionMismatchError, IngestError, StoreError
from tasks.core.payload import SOURCE
from tasks.core.settings import StoreLocation
from tasks.core.store.base import (
    SearchHit,
    StoredPoint,
    VectorStore,
    store_in_use,
)

CONFIG_FILE = "edge_config.json"


class EdgeStore(VectorStore):
    """Collections as Qdrant Edge shards; each shard is opened once per process, lazily."""

    def __init__(self, location: StoreLocation) -> None:
        super().__init__(location)
        self.root = Path(location.path)
        # Points waiting for the graph index before a run's end triggers optimize(): below
        # this, exact search over them costs a few milliseconds and indexing would cost more.
        self.optimize_threshold = location.optimize_threshold
        self._shards: dict[str, Any] = {}

    def _folder(self, collection: str) -> Path:
        return self.root / collection

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except IngestError:
            raise
        except Exception as exc:  # the bindings raise plain Exception with the engine's message
            message = str(exc)
            if "WouldBlock" in message:  # the shard's WAL lock: one process per shard
                raise store_in_use(self.location) from exc
            raise StoreError(f"Qdrant Edge: {message}") from exc

    def _shard(self, collection: str):
        shard = self._shards.get(collection)
        if shard is None:
            from qdrant_edge import EdgeShard

            shard = self._shards[collection] = EdgeShard.load(str(self._folder(collection)))
        return shard

    def _vectors_config(self, collection: str) -> tuple[int, str] | None:
        config_file = self._folder(collection) / CONFIG_FILE
        if not config_file.is_file():
            return None
        vectors = json.loads(config_file.read_text()).get("vectors", {})
        if set(vectors) != {""}:
            raise CollectionMismatchError("uses named vectors; it was not created by this tool")
        self._shard(collection)  # open now: a shard in use elsewhere fails before any work
        return int(vectors[""]["size"]), str(vectors[""]["distance"])

    def _create(self, collection: str, dimension: int) -> None:
        from qdrant_edge import (
            Distance,
            EdgeConfig,
            EdgeShard,
            EdgeVectorParams,
            PayloadSchemaType,
            UpdateOperation,
        )

        folder = self._folder(collection)
        folder.mkdir(parents=True, exist_ok=True)
        shard = EdgeShard.create(str(folder), EdgeConfig(
            vectors=EdgeVectorParams(size=dimension, distance=Distance.Cosine)))
        shard.update(UpdateOperation.create_field_index(SOURCE, PayloadSchemaType.Keyword))
        self._shards[collection] = shard

    def _drop(self, collection: str) -> None:
        shard = self._shards.pop(collection, None)
        if shard is not None:
            shard.close()
        shutil.rmtree(self._folder(collection), ignore_errors=True)

    def _upsert(self, collection: str, points: Sequence[StoredPoint]) -> None:
        from qdrant_edge import Point, UpdateOperation

        self._shard(collection).update(UpdateOperation.upsert_points(
            [Point(id=p.id, vector=p.vector, payload=p.payload) for p in points]))

    def _delete(self, collection: str, ids: Sequence[str]) -> None:
        from qdrant_edge import UpdateOperation

        self._shard(collection).update(UpdateOperation.delete_points(list(ids)))

    def _set_payload(self, collection: str, ids: Sequence[str], payload: dict[str, Any]) -> None:
        from qdrant_edge import UpdateOperation

        self._shard(collection).update(UpdateOperation.set_payload(list(ids), payload))

    @staticmethod
    def _point(record) -> StoredPoint:
        return StoredPoint(id=str(record.id), vector=record.vector, payload=record.payload or {})

    def _retrieve(self, collection: str, ids: Sequence[str],
                  fields: list[str] | None) -> list[StoredPoint]:
        records = self._shard(collection).retrieve(
            list(ids), with_payload=fields if fields is not None else True, with_vector=False)
        return [self._point(r) for r in records]

    def _scroll(self, collection: str, offset: Any, limit: int, fields: list[str] | None,
                with_vectors: bool) -> tuple[list[StoredPoint], Any]:
        from qdrant_edge import ScrollRequest

        records, next_offset = self._shard(collection).scroll(ScrollRequest(
            offset=offset, limit=limit, with_vector=with_vectors,
            with_payload=fields if fields is not None else True))
        return [self._point(r) for r in records], next_offset

    def _query(self, collection: str, vector: Sequence[float], limit: int) -> list[SearchHit]:
        from qdrant_edge import Query, QueryRequest

        points = self._shard(collection).query(QueryRequest(
            limit=limit, query=Query.Nearest(list(vector)), with_payload=True))
        return [SearchHit(score=p.score, payload=p.payload or {}) for p in points]

    def _count(self, collection: str) -> int:
        return self._shard(collection).info().points_count

    def maintain(self, collection: str) -> str | None:
        """Build the graph index when enough points wait for it (``optimize()`` blocks)."""
        with self._lock, self._errors():
            if self._vectors_config(collection) is None:
                return None
            shard = self._shard(collection)
            info = shard.info()
            waiting = info.points_count - info.indexed_vectors_count
            if waiting < self.optimize_threshold or not shard.optimize():
                return None
            after = shard.info()
            return f"optimized: {after.indexed_vectors_count} of {after.points_count} points indexed"

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                with contextlib.suppress(Exception):
                    shard.flush()
                    shard.close()
            self._shards.clear()
