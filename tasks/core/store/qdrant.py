"""qdrant-client backend: a Qdrant server (``QDRANT_URL``) or qdrant-client's local mode.

Local mode (``INGEST_STORE=qdrant-local``) is pure Python with brute-force search; it stays
available explicitly and is what tests use to exercise the server code path, since the
qdrant-client project keeps it congruent with the server.

A collection built before hybrid search (or before the 4-gram vector) gets the keyword vectors
it lacks added in place (``create_vector_name``, Qdrant ≥ 1.18) and filled from each point's
payload text; collection
metadata marks the fill as pending until it has finished, so a crash mid-way resumes it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from tasks.core.errors import (
    CollectionMismatchError,
    IngestError,
    StoreError,
    StoreUnavailableError,
)
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

PENDING = "ingest_bm25_pending"  # collection metadata: BM25 vectors being filled in


class QdrantClientStore(VectorStore):
    """Qdrant through qdrant-client; one client per process and location."""

    def __init__(self, location: StoreLocation, *, api_key: str | None = None,
                 timeout: float = 30.0) -> None:
        from qdrant_client import QdrantClient

        self.embedded = location.kind == "qdrant-local"
        super().__init__(location)
        if self.embedded:
            try:
                self.client = QdrantClient(path=location.path)
            except RuntimeError as exc:  # its portalocker lock: one process per folder
                raise store_in_use(location) from exc
        else:
            self.client = QdrantClient(url=location.url, api_key=api_key, timeout=int(timeout))

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        import httpx
        from qdrant_client.http.exceptions import (
            ResponseHandlingException,
            UnexpectedResponse,
        )

        try:
            yield
        except IngestError:
            raise
        except UnexpectedResponse as exc:
            message = f"Qdrant answered {exc.status_code} {exc.reason_phrase}"
            if exc.status_code is None or exc.status_code >= 500 or exc.status_code == 429:
                raise StoreUnavailableError(message) from exc
            raise StoreError(f"{message}: {exc.content[:300]!r}") from exc
        except (ResponseHandlingException, httpx.TransportError, ConnectionError, TimeoutError) as exc:
            raise StoreUnavailableError(
                f"Qdrant at {self.location.describe()} is unreachable: {type(exc).__name__}") from exc

    def _vectors_config(self, collection: str) -> CollectionShape | None:
        from qdrant_client import models

        if not self.client.collection_exists(collection):
            return None
        config = self.client.get_collection(collection).config
        vectors = config.params.vectors
        if not isinstance(vectors, models.VectorParams):
            raise CollectionMismatchError("uses named vectors; it was not created by this tool")
        # a fill in progress (PENDING) may have left any of them half done
        sparse = (frozenset() if (config.metadata or {}).get(PENDING)
                  else frozenset(config.params.sparse_vectors or {}) & set(SPARSE_VECTORS))
        return CollectionShape(size=vectors.size, distance=vectors.distance.value, sparse=sparse)

    @staticmethod
    def _sparse_params():
        from qdrant_client import models

        return models.SparseVectorParams(modifier=models.Modifier.IDF)

    def _create(self, collection: str, dimension: int) -> None:
        from qdrant_client import models

        self.client.create_collection(
            collection, vectors_config=models.VectorParams(size=dimension, distance=models.Distance.COSINE),
            sparse_vectors_config={name: self._sparse_params() for name in SPARSE_VECTORS})
        if not self.embedded:  # local mode has no payload indexes (it scans)
            self.client.create_payload_index(collection, SOURCE, models.PayloadSchemaType.KEYWORD)

    def _add_sparse(self, collection: str, shape: CollectionShape, encode: SparseEncode) -> int:
        from qdrant_client import models
        from qdrant_client.http.exceptions import UnexpectedResponse

        self.client.update_collection(collection, metadata={PENDING: True})
        present = self.client.get_collection(collection).config.params.sparse_vectors or {}
        for name in (n for n in SPARSE_VECTORS if n not in present):
            try:
                self.client.create_vector_name(collection, name, models.SparseVectorNameConfig(
                    sparse=models.SparseVectorConfig(modifier=models.Modifier.IDF)))
            except UnexpectedResponse as exc:
                if exc.status_code not in (404, 405):
                    raise
                raise StoreError(
                    f"collection {collection!r} lacks the keyword vector {name!r} of this version "
                    "and this Qdrant server cannot add a vector to an existing collection (Qdrant 1.18 or later can): "
                    "upgrade the server, or ingest into a new collection (--collection), or "
                    "search it with --mode dense") from exc
        filled, offset = 0, None
        while True:
            points, offset = self._scroll(collection, offset, 512, ["text"], False)
            sparse = encode([p.payload.get("text", "") for p in points])
            if points:
                self.client.update_vectors(collection, wait=True, points=[
                    models.PointVectors(id=p.id, vector=self._wire_all(s))
                    for p, s in zip(points, sparse)])
            filled += len(points)
            if offset is None:
                break
        self.client.update_collection(collection, metadata={PENDING: False})
        return filled

    @staticmethod
    def _wire(sparse: Sparse):
        from qdrant_client import models

        return models.SparseVector(indices=list(sparse.indices), values=list(sparse.values))

    @classmethod
    def _wire_all(cls, keywords: Keywords) -> dict:
        return {name: cls._wire(vector) for name, vector in keywords.named().items()}

    def _drop(self, collection: str) -> None:
        self.client.delete_collection(collection)

    def _upsert(self, collection: str, points: Sequence[StoredPoint]) -> None:
        from qdrant_client import models

        self.client.upsert(collection, wait=True, points=[
            models.PointStruct(id=p.id, payload=p.payload, vector=p.vector if p.sparse is None
                               else {"": p.vector, **self._wire_all(p.sparse)})
            for p in points])

    def _delete(self, collection: str, ids: Sequence[str]) -> None:
        self.client.delete(collection, points_selector=list(ids), wait=True)

    def _set_payload(self, collection: str, ids: Sequence[str], payload: dict[str, Any]) -> None:
        self.client.set_payload(collection, payload, points=list(ids), wait=True)

    @staticmethod
    def _point(record) -> StoredPoint:
        vector, sparse = record.vector, None
        if isinstance(vector, dict):
            found = {name: Sparse(tuple(v.indices), tuple(v.values))
                     for name, v in vector.items() if name in SPARSE_VECTORS}
            sparse = Keywords.from_named(found) if found else None
            vector = vector.get("")
        return StoredPoint(id=str(record.id), vector=vector if isinstance(vector, list) else None,
                           payload=record.payload or {}, sparse=sparse)

    def _retrieve(self, collection: str, ids: Sequence[str],
                  fields: list[str] | None) -> list[StoredPoint]:
        records = self.client.retrieve(collection, ids=list(ids), with_vectors=False,
                                       with_payload=fields if fields is not None else True)
        return [self._point(r) for r in records]

    def _scroll(self, collection: str, offset: Any, limit: int, fields: list[str] | None,
                with_vectors: bool) -> tuple[list[StoredPoint], Any]:
        records, next_offset = self.client.scroll(
            collection, offset=offset, limit=limit, with_vectors=with_vectors,
            with_payload=fields if fields is not None else True)
        return [self._point(r) for r in records], next_offset

    def _query(self, collection: str, dense: Sequence[float] | None, sparse: dict[str, Sparse],
               limit: int, prefetch: int) -> list[SearchHit]:
        from qdrant_client import models

        searches = {}
        if dense is not None:
            searches[""] = {"query": list(dense)}
            if not self.embedded:  # local mode searches exactly (and warns about the setting)
                searches[""]["params"] = models.SearchParams(hnsw_ef=HNSW_EF)
        for name, vector in sparse.items():
            searches[name] = {"query": self._wire(vector), "using": name}
        if len(searches) == 1:
            search = dict(next(iter(searches.values())))
            response = self.client.query_points(collection, limit=limit, with_payload=True,
                                                search_params=search.pop("params", None), **search)
        else:
            response = self.client.query_points(
                collection, limit=limit, with_payload=True,
                prefetch=[models.Prefetch(limit=prefetch, **search) for search in searches.values()],
                query=models.RrfQuery(rrf=models.Rrf(k=RRF_K, weights=[RRF_WEIGHTS[n] for n in searches])))
        return [SearchHit(score=p.score, payload=p.payload or {}) for p in response.points]

    def _count(self, collection: str) -> int:
        return self.client.count(collection, exact=True).count

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
