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
from tasks.core.settings import StoreLocation

T = TypeVar("T")

SOURCE_FIELD = "source"


@dataclass(frozen=True)
class IndexedFile:
    """What the store holds for one source file (read from its points' payloads)."""

    content_sha256: str
    config_fingerprint: str
    chunk_count: int
    page_count: int | None
    consistent: bool  # every point of the source belongs to this one version, none missing


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
    def ensure_collection(self, name: str, dimension: int) -> None:
        """Create the collection (cosine, ``dimension``) or check that the existing one fits.

        Raises ``CollectionMismatchError`` before anything is written when it does not.
        """
        from qdrant_client import models

        if not self.client.collection_exists(name):
            self.client.create_collection(
                name, vectors_config=models.VectorParams(size=dimension, distance=models.Distance.COSINE))
            if not self.embedded:  # embedded mode has no payload indexes (it scans)
                self.client.create_payload_index(name, SOURCE_FIELD, models.PayloadSchemaType.KEYWORD)
            return
        vectors = self.client.get_collection(name).config.params.vectors
        if not isinstance(vectors, models.VectorParams):
            raise CollectionMismatchError(
                f"collection {name!r} uses named vectors; it was not created by this tool")
        if vectors.size != dimension or vectors.distance != models.Distance.COSINE:
            raise CollectionMismatchError(
                f"collection {name!r} holds {vectors.size}-d {vectors.distance.value} vectors but the "
                f"model makes {dimension}-d Cosine ones; choose another collection")

    @staticmethod
    def _source_filter(source: str, **extra: Any):
        from qdrant_client import models

        must = [models.FieldCondition(key=SOURCE_FIELD, match=models.MatchValue(value=source))]
        for key, value in extra.items():
            must.append(models.FieldCondition(key=key, match=models.MatchValue(value=value)))
        return models.Filter(must=must)

    @_translate
    def indexed_file(self, collection: str, source: str) -> IndexedFile | None:
        """What is stored for ``source``, or ``None``; cheap: one point read and two counts."""
        points, _ = self.client.scroll(collection, scroll_filter=self._source_filter(source),
                                       limit=1, with_payload=True, with_vectors=False)
        if not points:
            return None
        payload = points[0].payload or {}
        sha, fingerprint = payload.get("content_sha256", ""), payload.get("config_fingerprint", "")
        chunk_count = int(payload.get("chunk_count", -1))
        total = self.client.count(collection, count_filter=self._source_filter(source), exact=True).count
        same = self.client.count(collection, exact=True, count_filter=self._source_filter(
            source, content_sha256=sha, config_fingerprint=fingerprint)).count
        return IndexedFile(content_sha256=sha, config_fingerprint=fingerprint,
                           chunk_count=chunk_count, page_count=payload.get("page_count"),
                           consistent=total == same == chunk_count)

    @_translate
    def replace_file_points(self, collection: str, source: str, points: Sequence[Any], *,
                            batch_size: int) -> None:
        """Write a file's new points, then delete its points beyond the new chunk count.

        Point IDs are deterministic per (source, chunk index), so the upserts overwrite the old
        version in place and the file is never absent from search while it is replaced.
        """
        from qdrant_client import models

        for begin in range(0, len(points), batch_size):
            self.client.upsert(collection, points=list(points[begin:begin + batch_size]), wait=True)
        stale = self._source_filter(source)
        stale.must.append(models.FieldCondition(key="chunk_index", range=models.Range(gte=len(points))))
        self.client.delete(collection, points_selector=models.FilterSelector(filter=stale), wait=True)

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
