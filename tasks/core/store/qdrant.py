"""qdrant-client backend: a Qdrant server (``QDRANT_URL``) or qdrant-client's local mode.

Local mode (``INGEST_STORE=qdrant-local``) is pure Python with brute-force search; it stays
available explicitly and is what tests use to exercise the server code path, since the
qdrant-client project keeps it congruent with the server.
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
from tasks.core.store.base import (
    SearchHit,
    StoredPoint,
    VectorStore,
    store_in_use,
)


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

    def _vectors_config(self, collection: str) -> tuple[int, str] | None:
        from qdrant_client import models

        if not self.client.collection_exists(collection):
            return None
        vectors = self.client.get_collection(collection).config.params.vectors
        if not isinstance(vectors, models.VectorParams):
            raise CollectionMismatchError("uses named vectors; it was not created by this tool")
        return vectors.size, vectors.distance.value

    def _create(self, collection: str, dimension: int) -> None:
        from qdrant_client import models

        self.client.create_collection(collection, vectors_config=models.VectorParams(
            size=dimension, distance=models.Distance.COSINE))
        if not self.embedded:  # local mode has no payload indexes (it scans)
            self.client.create_payload_index(collection, SOURCE, models.PayloadSchemaType.KEYWORD)

    def _drop(self, collection: str) -> None:
        self.client.delete_collection(collection)

    def _upsert(self, collection: str, points: Sequence[StoredPoint]) -> None:
        from qdrant_client import models

        self.client.upsert(collection, wait=True, points=[
            models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in points])

    def _delete(self, collection: str, ids: Sequence[str]) -> None:
        self.client.delete(collection, points_selector=list(ids), wait=True)

    def _set_payload(self, collection: str, ids: Sequence[str], payload: dict[str, Any]) -> None:
        self.client.set_payload(collection, payload, points=list(ids), wait=True)

    @staticmethod
    def _point(record) -> StoredPoint:
        vector = record.vector if isinstance(record.vector, list) else None
        return StoredPoint(id=str(record.id), vector=vector, payload=record.payload or {})

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

    def _query(self, collection: str, vector: Sequence[float], limit: int) -> list[SearchHit]:
        response = self.client.query_points(collection, query=list(vector), limit=limit,
                                            with_payload=True)
        return [SearchHit(score=p.score, payload=p.payload or {}) for p in response.points]

    def _count(self, collection: str) -> int:
        return self.client.count(collection, exact=True).count

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
