"""Qdrant Edge backend (``qdrant-edge-py``): the Qdrant engine in-process, the embedded default.

One shard folder per collection under ``<INGEST_QDRANT_PATH>/edge/<collection>``: write-ahead
log (durable through a crash), memory-mapped vectors and payloads, and an HNSW index built by
``optimize()``. Points not yet indexed are searched exactly, so a search right after a run is
correct before any index exists. The index is built in pieces of a bounded size: whenever a
written file leaves ``optimize_threshold`` points waiting (and in ``maintain`` at a run's end),
so neither the points waiting (their BM25 postings are held in RAM) nor one build grows with the
collection; segments are capped so that Edge never merges them into one big rebuild.

A shard's vector config is fixed at creation, so a collection built before hybrid search (or
before the 4-gram vectors) gets its keyword vectors by a rebuild: a new shard beside it
(``<name>.upgrade``) filled with the same points plus their keyword vectors from their text,
then swapped in by two renames (the old folder is kept as
``<name>.replaced`` until the swap is done; ``_recover`` finishes or undoes a swap a crash cut).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tasks.core.errors import CollectionMismatchError, IngestError, StoreError
from tasks.core.heap import heavy_step
from tasks.core.payload import SOURCE
from tasks.core.settings import StoreLocation
from tasks.core.sparse import SPARSE_VECTORS, Keywords, Sparse, SparseEncode
from tasks.core.store.base import (
    HNSW_EF,
    RRF_K,
    RRF_WEIGHTS,
    CollectionShape,
    SearchHit,
    StoredPoint,
    VectorStore,
    store_in_use,
)

CONFIG_FILE = "edge_config.json"
#: Edge's own indexing threshold (KB of vectors): a segment below it is never given a graph
#: index, whatever ``optimize()`` is asked. The store decides when to build (its
#: ``optimize_threshold`` in points), so Edge's must not veto a piece: its default, 10 MB, is
#: more than 4,000 of the model's 384-d vectors (6 MB).
INDEXING_THRESHOLD_KB = 100


def segment_cap_kb(dimension: int, optimize_threshold: int) -> int:
    """The segment size cap (KB of dense vectors) given to Edge's merge optimizer: one piece's
    worth, so that two pieces never fit in one segment and are never merged back into one
    rebuild (a piece alone may be larger; it is indexed all the same). Left at Edge's default,
    the merge optimizer joins the pieces, and that rebuild is the peak the pieces avoid (33k
    chunks of `make eval` text on Edge alone: built whole 1,074 MB, in 8k pieces merged up to
    64 MB 1,062 MB, in 8k pieces capped at 20 MB 661 MB)."""
    return max(1, optimize_threshold * dimension * 4 // 1024)


BUILDING, REPLACED = ".upgrade", ".replaced"  # suffixes of a rebuild's folders (names have no dots)


class EdgeStore(VectorStore):
    """Collections as Qdrant Edge shards; each shard is opened once per process, lazily."""

    def __init__(self, location: StoreLocation) -> None:
        super().__init__(location)
        self.root = Path(location.path)
        # Points waiting for the graph index before a run's end triggers optimize(): below
        # this, exact search over them costs a few milliseconds and indexing would cost more.
        self.optimize_threshold = location.optimize_threshold
        self._shards: dict[str, Any] = {}
        # Vectors each point of an open shard has (dense + BM25), read with its config when
        # opened: ``_build_index`` needs it after every file written.
        self._per_point: dict[str, int] = {}

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

            folder = self._folder(collection)
            stored = json.loads((folder / CONFIG_FILE).read_text())
            config = None
            dimension = int(stored["vectors"][""]["size"])
            recorded = stored.get("optimizers") or {}
            if any(recorded.get(k) != v for k, v in self._optimizers(dimension).items()):
                # A shard made before the segment cap, or with another threshold, gets this
                # store's (load checks and rewrites the config; the vectors must be described
                # as they are, and their placement is kept).
                config = self._config(dimension, sparse=set(stored.get("sparse_vectors") or {}),
                                      cold=False)
            shard = self._shards[collection] = EdgeShard.load(str(folder), config)
            self._per_point[collection] = _vectors_per_point(stored.get("sparse_vectors") or {})
        return shard

    def _recover(self, collection: str) -> None:
        """Finish or undo a rebuild's swap that a crash interrupted."""
        folder = self._folder(collection)
        replaced = folder.with_name(collection + REPLACED)
        if not replaced.exists():
            return
        if folder.exists():  # swapped; only the old folder's removal was left
            shutil.rmtree(replaced, ignore_errors=True)
        else:  # cut between the two renames: put the old shard back (the rebuild runs again)
            os.rename(replaced, folder)

    def _vectors_config(self, collection: str) -> CollectionShape | None:
        if collection not in self._shards:
            self._recover(collection)
        config_file = self._folder(collection) / CONFIG_FILE
        if not config_file.is_file():
            return None
        config = json.loads(config_file.read_text())
        vectors = config.get("vectors", {})
        if set(vectors) != {""}:
            raise CollectionMismatchError("uses named vectors; it was not created by this tool")
        self._shard(collection)  # open now: a shard in use elsewhere fails before any work
        return CollectionShape(size=int(vectors[""]["size"]), distance=str(vectors[""]["distance"]),
                               sparse=frozenset(config.get("sparse_vectors") or {}) & set(SPARSE_VECTORS))

    def _optimizers(self, dimension: int) -> dict[str, int]:
        """This store's optimizer settings for a shard of ``dimension``-d vectors, as Edge
        records them in the shard's config file."""
        return {"max_segment_size": segment_cap_kb(dimension, self.optimize_threshold),
                "indexing_threshold": INDEXING_THRESHOLD_KB}

    def _config(self, dimension: int, sparse: Iterable[str] = SPARSE_VECTORS, *, cold: bool = True):
        """A shard's config. ``cold``: vectors and BM25 indexes stay in their memory-mapped
        files, read on demand (the page cache keeps what searches touch), so the process's
        resident memory does not grow with the collection (33k chunks on Edge alone: 558 MB
        peak vs 661 MB in Edge's defaults, which keep BM25 indexes in RAM and load the dense
        vectors whole; search p50 2.3 vs 3.3 ms, a first search after opening up to ~160 ms).
        Shards made before keep their placement (changing it would rebuild their segments)."""
        from qdrant_edge import (
            Distance,
            EdgeConfig,
            EdgeOptimizersConfig,
            EdgeSparseVectorParams,
            EdgeVectorParams,
            Memory,
            Modifier,
        )

        placement = {"memory": Memory.Cold} if cold else {}
        return EdgeConfig(vectors=EdgeVectorParams(size=dimension, distance=Distance.Cosine,
                                                   **placement),
                          sparse_vectors={name: EdgeSparseVectorParams(modifier=Modifier.Idf,
                                                                       **placement)
                                          for name in sparse},
                          optimizers=EdgeOptimizersConfig(**self._optimizers(dimension)))

    def _new_shard(self, folder: Path, dimension: int):
        from qdrant_edge import EdgeShard, PayloadSchemaType, UpdateOperation

        folder.mkdir(parents=True, exist_ok=True)
        shard = EdgeShard.create(str(folder), self._config(dimension))
        shard.update(UpdateOperation.create_field_index(SOURCE, PayloadSchemaType.Keyword))
        return shard

    def _create(self, collection: str, dimension: int) -> None:
        self._shards[collection] = self._new_shard(self._folder(collection), dimension)
        self._per_point[collection] = _vectors_per_point(SPARSE_VECTORS)

    def _add_sparse(self, collection: str, shape: CollectionShape, encode: SparseEncode) -> int:
        from qdrant_edge import EdgeShard, UpdateOperation

        folder = self._folder(collection)
        building = folder.with_name(collection + BUILDING)
        shutil.rmtree(building, ignore_errors=True)  # a rebuild a crash cut short
        target, filled, offset = self._new_shard(building, shape.size), 0, None
        waiting = 0
        try:
            while True:
                points, offset = self._scroll(collection, offset, 512, None, True)
                sparse = encode([p.payload.get("text", "") for p in points])
                target.update(UpdateOperation.upsert_points(
                    [self._edge_point(StoredPoint(p.id, p.vector, p.payload, s))
                     for p, s in zip(points, sparse)]))
                filled += len(points)
                waiting += len(points)
                if waiting >= self.optimize_threshold:  # the index in pieces, as in writes
                    with heavy_step():
                        target.optimize()
                        target.close()
                    target, waiting = EdgeShard.load(str(building)), 0
                if offset is None:
                    break
            target.flush()
        finally:
            target.close()
        self._shards.pop(collection).close()
        replaced = folder.with_name(collection + REPLACED)
        os.rename(folder, replaced)
        os.rename(building, folder)
        shutil.rmtree(replaced, ignore_errors=True)
        return filled

    def _drop(self, collection: str) -> None:
        shard = self._shards.pop(collection, None)
        if shard is not None:
            shard.close()
        shutil.rmtree(self._folder(collection), ignore_errors=True)

    @staticmethod
    def _edge_point(point: StoredPoint):
        from qdrant_edge import Point, SparseVector

        vector: Any = point.vector
        if point.sparse is not None:
            vector = {"": point.vector, **{name: SparseVector(list(v.indices), list(v.values))
                                          for name, v in point.sparse.named().items()}}
        return Point(id=point.id, vector=vector, payload=point.payload)

    def _upsert(self, collection: str, points: Sequence[StoredPoint]) -> None:
        from qdrant_edge import UpdateOperation

        self._shard(collection).update(UpdateOperation.upsert_points(
            [self._edge_point(p) for p in points]))

    def _delete(self, collection: str, ids: Sequence[str]) -> None:
        from qdrant_edge import UpdateOperation

        self._shard(collection).update(UpdateOperation.delete_points(list(ids)))

    def _set_payload(self, collection: str, ids: Sequence[str], payload: dict[str, Any]) -> None:
        from qdrant_edge import UpdateOperation

        self._shard(collection).update(UpdateOperation.set_payload(list(ids), payload))

    @staticmethod
    def _point(record) -> StoredPoint:
        vector, sparse = record.vector, None
        if isinstance(vector, dict):
            found = {name: Sparse(tuple(v.indices), tuple(v.values))
                     for name, v in vector.items() if name in SPARSE_VECTORS}
            sparse = Keywords.from_named(found) if found else None
            vector = vector.get("")
        return StoredPoint(id=str(record.id), vector=vector, payload=record.payload or {},
                           sparse=sparse)

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

    def _query(self, collection: str, dense: Sequence[float] | None, sparse: dict[str, Sparse],
               limit: int, prefetch: int) -> list[SearchHit]:
        from qdrant_edge import Fusion, Prefetch, Query, QueryRequest, SearchParams, SparseVector

        queries, params = {}, {}
        if dense is not None:
            queries[""] = Query.Nearest(list(dense))
            params[""] = SearchParams(hnsw_ef=HNSW_EF)
        for name, vector in sparse.items():
            queries[name] = Query.Nearest(SparseVector(list(vector.indices), list(vector.values)),
                                          using=name)
        if len(queries) == 1:
            (name, query), = queries.items()
            request = QueryRequest(limit=limit, query=query, params=params.get(name),
                                   with_payload=True)
        else:
            request = QueryRequest(limit=limit, prefetches=[
                Prefetch(limit=prefetch, query=q, params=params.get(n)) for n, q in queries.items()],
                query=Fusion.Rrf(k=RRF_K, weights=[RRF_WEIGHTS[n] for n in queries]),
                with_payload=True)
        points = self._shard(collection).query(request)
        return [SearchHit(score=p.score, payload=p.payload or {}) for p in points]

    def _count(self, collection: str) -> int:
        return self._shard(collection).info().points_count

    def maintain(self, collection: str) -> str | None:
        """Build the graph index when enough points wait for it (``optimize()`` blocks)."""
        with self._lock, self._errors():
            return self._build_index(collection)

    def _written(self, collection: str) -> None:
        self._build_index(collection)

    def _build_index(self, collection: str) -> str | None:
        if collection not in self._shards and self._vectors_config(collection) is None:
            return None
        shard = self._shard(collection)
        # Edge counts indexed vectors of every name, and BM25 vectors (every point has each,
        # empty or not) are indexed as they are written: the dense vectors waiting are what
        # is left.
        per_point = self._per_point[collection]
        info = shard.info()
        waiting = info.points_count * per_point - info.indexed_vectors_count
        if waiting < self.optimize_threshold:
            return None
        # Reopened before the build and after it: the pages a shard has written or read through
        # memory maps (the waiting points, the write-ahead log, the build's old, temporary and
        # new segments) stay resident in this process until unmapped. After the build, Edge's
        # freed heap goes back to the OS too (glibc keeps it otherwise). On Edge alone, 33k
        # real chunks: 970 MB peak kept open, 661 MB reopened after each build (8k pieces);
        # in 4k pieces, reopened before and after, trimmed: 604 MB against 721 MB in 8k pieces
        # reopened after only.
        self._shards.pop(collection).close()
        with heavy_step():
            built = self._shard(collection).optimize()
            self._shards.pop(collection).close()
        if not built:
            return None
        after = self._shard(collection).info()
        dense = after.indexed_vectors_count - after.points_count * (per_point - 1)
        return f"optimized: {dense} of {after.points_count} points indexed"

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                with contextlib.suppress(Exception):
                    shard.flush()
                    shard.close()
            self._shards.clear()


def _vectors_per_point(sparse: Iterable[str]) -> int:
    """How many vectors Edge indexes for each point of a shard with ``sparse`` vectors: the
    dense one and this tool's BM25 vectors."""
    return 1 + len(set(sparse) & set(SPARSE_VECTORS))
