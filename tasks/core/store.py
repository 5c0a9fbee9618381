"""The vector store adapter: Qdrant through qdrant-client, embedded on disk or a server.

The same code serves both: ``QdrantClient(path=...)`` for the embedded default and
``QdrantClient(url=..., api_key=...)`` when ``QDRANT_URL`` is set. Errors are translated at
this boundary: unreachable or overloaded servers become ``StoreUnavailableError`` (retried),
refusals become ``StoreError``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from tasks.core.errors import CollectionMismatchError, StoreError, StoreUnavailableError
from tasks.core.ids import point_id
from tasks.core.settings import StoreLocation

T = TypeVar("T")

SOURCE_FIELD = "source"


HEAD_INDEX = 0  # a file's chunk 0 is its head point: it carries the file's commit marker


@dataclass(frozen=True)
class FileHead:
    """What the store holds for one source file, read from its head point's payload."""

    content_sha256: str
    config_fingerprint: str
    chunk_count: int
    page_count: int | None
    signature: str | None
    complete: bool  # the last write of this file finished: all its points are this version


@dataclass(frozen=True)
class SearchHit:
    score: float
    payload: dict[str, Any]


def _translate(call: Callable[..., T]) -> Callable[..., T]:
    """Map qdrant-client/httpx exceptions onto the ingest error hierarchy."""

    @functools.wraps(call)
    def wrapper(self: QdrantStore, *args: Any, **kwargs: Any) -> T:
        import httpx
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        try:
            with self._guard():
                return call(self, *args, **kwargs)
        except UnexpectedResponse as exc:
            message = f"Qdrant answered {exc.status_code} {exc.reason_phrase}"
            if exc.status_code is None or exc.status_code >= 500 or exc.status_code == 429:
                raise StoreUnavailableError(message) from exc
            raise StoreError(f"{message}: {exc.content[:300]!r}") from exc
        except (ResponseHandlingException, httpx.TransportError, ConnectionError, TimeoutError) as exc:
            raise StoreUnavailableError(
                f"Qdrant at {self.location.describe()} is unreachable: {type(exc).__name__}") from exc

    return wrapper


class QdrantStore:
    """One client per process and location; thread-safe (embedded mode is serialised)."""

    def __init__(self, location: StoreLocation, *, api_key: str | None = None,
                 timeout: float = 30.0) -> None:
        from qdrant_client import QdrantClient

        self.location = location
        self.embedded = location.path is not None
        # qdrant-client's embedded mode is plain Python state without locking of its own.
        self._lock = threading.Lock() if self.embedded else None
        if self.embedded:
            try:
                self.client = QdrantClient(path=location.path)
            except RuntimeError as exc:  # its portalocker lock: one process per folder
                raise StoreError(
                    f"the embedded store at {location.path} is in use by another process; "
                    "wait for it to finish or set QDRANT_URL to use a Qdrant server") from exc
        else:
            self.client = QdrantClient(url=location.url, api_key=api_key, timeout=int(timeout))

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        if self._lock is None:
            yield
        else:
            with self._lock:
                yield

    @_translate
    def ensure_collection(self, name: str, dimension: int, *, recreate_on_mismatch: bool = False) -> None:
        """Create the collection (cosine, ``dimension``) or check that the existing one fits.

        Raises ``CollectionMismatchError`` before anything is written when it does not — unless
        ``recreate_on_mismatch`` (``--overwrite``), which drops it and starts afresh.
        """
        from qdrant_client import models

        if recreate_on_mismatch and self.client.collection_exists(name):
            vectors = self.client.get_collection(name).config.params.vectors
            if not (isinstance(vectors, models.VectorParams) and vectors.size == dimension
                    and vectors.distance == models.Distance.COSINE):
                self.client.delete_collection(name)
        if not self.client.collection_exists(name):
            self.client.create_collection(
                name, vectors_config=models.VectorParams(size=dimension, distance=models.Distance.COSINE))
            if not self.embedded:  # embedded mode has no payload indexes (it scans)
                self.client.create_payload_index(name, SOURCE_FIELD, models.PayloadSchemaType.KEYWORD)
            return
        vectors = self.client.get_collection(name).config.params.vectors
        if not isinstance(vectors, models.VectorParams):
            raise CollectionMismatchError(
                f"collection {name!r} uses named vectors; it was not created by this tool "
                "(choose another collection, or pass --overwrite to drop and recreate it)")
        if vectors.size != dimension or vectors.distance != models.Distance.COSINE:
            raise CollectionMismatchError(
                f"collection {name!r} holds {vectors.size}-d {vectors.distance.value} vectors but the "
                f"model makes {dimension}-d Cosine ones; choose another collection, or pass "
                "--overwrite to drop and recreate it")

    @_translate
    def file_heads(self, collection: str, sources: list[str]) -> dict[str, FileHead]:
        """Head payloads of the ``sources`` that are indexed: one lookup by ID for a group."""
        if not sources:
            return {}
        records = self.client.retrieve(collection, ids=[point_id(s, HEAD_INDEX) for s in sources],
                                       with_payload=True, with_vectors=False)
        heads = {}
        for record in records:
            p = record.payload or {}
            heads[p["source"]] = FileHead(
                content_sha256=p.get("content_sha256", ""),
                config_fingerprint=p.get("config_fingerprint", ""),
                chunk_count=int(p.get("chunk_count", 0)), page_count=p.get("page_count"),
                signature=p.get("source_signature"), complete=bool(p.get("complete")))
        return heads

    def _extents(self, collection: str, sources: list[str]) -> dict[str, int]:
        """How many chunk indexes may hold points of each source (from the heads)."""
        records = self.client.retrieve(collection, ids=[point_id(s, HEAD_INDEX) for s in sources],
                                       with_payload=["source", "extent", "chunk_count"],
                                       with_vectors=False)
        return {r.payload["source"]: int(r.payload.get("extent", r.payload.get("chunk_count", 1)))
                for r in records if r.payload}

    @_translate
    def replace_file_points(self, collection: str, source: str, points: Sequence[Any], *,
                            batch_size: int) -> None:
        """Replace a file's points so that a crash at any step is repaired by the next run.

        Point IDs are deterministic per (source, chunk index), so new points overwrite the old
        version in place and the file never disappears from search. The head point (chunk 0) is
        the commit marker and is written first, incomplete, with ``extent`` covering every index
        the old or the new version may occupy; then the other chunks; then the surplus indexes
        are deleted by ID; only then is the head marked complete. Every step is by ID, so a
        write costs the same whatever the size of the collection.
        """
        count = len(points)
        extent = max(self._extents(collection, [source]).get(source, 0), count)
        head, rest = points[0], list(points[1:])
        head.payload.update(complete=False, extent=extent)
        self.client.upsert(collection, points=[head], wait=True)
        for begin in range(0, len(rest), batch_size):
            self.client.upsert(collection, points=rest[begin:begin + batch_size], wait=True)
        surplus = [point_id(source, index) for index in range(count, extent)]
        for begin in range(0, len(surplus), batch_size):
            self.client.delete(collection, points_selector=surplus[begin:begin + batch_size], wait=True)
        self.client.set_payload(collection, {"complete": True, "extent": count}, points=[head.id],
                                wait=True)

    @_translate
    def update_signature(self, collection: str, source: str, signature: str | None) -> None:
        """Record a new listing signature on an unchanged file's head (e.g. after a touch)."""
        self.client.set_payload(collection, {"source_signature": signature},
                                points=[point_id(source, HEAD_INDEX)], wait=True)

    @_translate
    def indexed_sources(self, collection: str) -> set[str]:
        """Every source with points in the collection (pages through payloads, no vectors)."""
        sources: set[str] = set()
        offset = None
        while True:
            points, offset = self.client.scroll(collection, limit=2048, offset=offset,
                                                with_payload=[SOURCE_FIELD], with_vectors=False)
            sources.update(p.payload[SOURCE_FIELD] for p in points if p.payload)
            if offset is None:
                return sources

    @_translate
    def delete_sources(self, collection: str, sources: list[str], *, batch_size: int = 256) -> None:
        """Delete every point of ``sources`` (by ID, from each head's extent)."""
        for begin in range(0, len(sources), batch_size):
            extents = self._extents(collection, sources[begin:begin + batch_size])
            ids = [point_id(source, index) for source, extent in extents.items()
                   for index in range(extent)]
            for start in range(0, len(ids), batch_size):
                self.client.delete(collection, points_selector=ids[start:start + batch_size], wait=True)

    @_translate
    def search(self, collection: str, vector: Sequence[float], *, limit: int) -> list[SearchHit]:
        """Nearest points by cosine similarity, best first."""
        if not self.client.collection_exists(collection):
            raise StoreError(f"collection {collection!r} does not exist; run 'ingest run' first")
        response = self.client.query_points(collection, query=list(vector), limit=limit,
                                            with_payload=True)
        return [SearchHit(score=p.score, payload=p.payload or {}) for p in response.points]

    @_translate
    def count(self, collection: str) -> int:
        """Points in the collection (0 when it does not exist)."""
        if not self.client.collection_exists(collection):
            return 0
        return self.client.count(collection, exact=True).count

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


_stores: dict[StoreLocation, QdrantStore] = {}
_stores_lock = threading.Lock()


def get_store(location: StoreLocation) -> QdrantStore:
    """The process-wide store for ``location``, created on first use.

    The API key is read from the environment here, in the process that talks to the server,
    so it never travels in task parameters.
    """
    with _stores_lock:
        store = _stores.get(location)
        if store is None:
            api_key = None
            if location.url:
                from tasks.core.settings import IngestSettings

                secret = IngestSettings().qdrant_api_key
                api_key = secret.get_secret_value() if secret else None
            if not _stores:
                # Close before interpreter teardown: the embedded client's __del__ fails then.
                atexit.register(close_stores)
            store = _stores[location] = QdrantStore(location, api_key=api_key)
        return store


def close_stores() -> None:
    """Close every cached client (releases the embedded store's folder lock)."""
    with _stores_lock:
        for store in _stores.values():
            store.close()
        _stores.clear()
