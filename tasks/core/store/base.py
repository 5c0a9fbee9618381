"""The vector store interface: the ingest semantics implemented once on backend primitives.

Backends provide a handful of primitives (upsert, delete and retrieve by ID, set payload,
scroll, nearest-neighbour query, collection config); ``VectorStore`` builds everything the
pipeline needs on them — collection checks, the crash-safe per-file write, head lookups,
prune, export — so the semantics are the same whichever backend runs (``edge.py``,
``qdrant.py``). Every per-file operation goes by point ID, so its cost does not grow with the
collection.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from tasks.core.errors import CollectionMismatchError, StoreError
from tasks.core.ids import point_id, runtime_label
from tasks.core.payload import CHUNK_COUNT, COMPLETE, EXTENT, SIGNATURE, SOURCE, FileHead
from tasks.core.settings import StoreLocation
from tasks.core.sparse import GRAMS_VECTOR, SPARSE_VECTOR, SPARSE_VECTORS, Keywords, Sparse, SparseEncode

T = TypeVar("T")
log = logging.getLogger(__name__)

HEAD_INDEX = 0  # a file's chunk 0 is its head point: it carries the file's commit marker
#: Reciprocal rank fusion of hybrid search: score = sum of weight / (rank + k) over the dense, the
#: words' BM25 and the 4-grams' BM25 lists (Qdrant's weighted form). k = 60 is the usual constant
#: (k = 20 and 10 measured no better on make eval). The weights differ by a hair only to break
#: ties: with equal weights a hit ranked i-th by one list and j-th by another scores exactly what
#: a hit ranked j-th and i-th scores, and the engine orders such ties arbitrarily (make eval
#: moved by up to 0.02 in recall@1 between identical runs). In Qdrant's weighted form,
#: 1 / (rank / w + k - 1), a lighter weight costs a lower rank more than a higher one: of two
#: hits ranked (i, j) and (j, i) by words and meaning, the one ranked higher by meaning wins; by
#: meaning and 4-grams, meaning; by words and 4-grams, words. (With two lists, dense and words,
#: make eval measured 0.884 / 0.983 / 0.929 hybrid R@1 / R@5 / MRR this way and 0.876 / 0.992 /
#: 0.925 with the words lighter — one question either way.)
RRF_K = 60
#: By vector name ("" is the dense one).
RRF_WEIGHTS = {"": 0.999, SPARSE_VECTOR: 1.0, GRAMS_VECTOR: 0.998}
#: Candidates the dense search explores in an HNSW graph (Qdrant's ``hnsw_ef``). With the
#: engine's default (as 128) the eval collection, once indexed, lost dense recall@5 0.901 ->
#: 0.876 against exact search (160: 0.893); 256 matched exact search on every metric, for
#: ~2 ms more per search at 20k chunks (`bench.search`: hybrid p50 30.9 vs 28.3 ms).
HNSW_EF = 256


def fusion_depth(limit: int) -> int:
    """Candidates each list contributes to a fused search for ``limit`` hits."""
    return max(4 * limit, 40)


@dataclass
class StoredPoint:
    """A point as the pipeline writes and reads it, whatever the backend."""

    id: str
    vector: list[float] | None
    payload: dict[str, Any]
    sparse: Keywords | None = None  # BM25 vectors of the chunk's text (``tasks.core.sparse``)


@dataclass(frozen=True)
class CollectionShape:
    """What the pipeline needs to know of an existing collection's vectors."""

    size: int
    distance: str
    #: The keyword vectors (``SPARSE_VECTORS``) it holds, filled for every point.
    sparse: frozenset[str] = frozenset()

    @property
    def complete(self) -> bool:
        """Holds every keyword vector this version writes (else a run fills them in)."""
        return set(SPARSE_VECTORS) <= self.sparse


@dataclass(frozen=True)
class SearchHit:
    score: float
    payload: dict[str, Any]


def store_in_use(location: StoreLocation) -> StoreError:
    """The error for an embedded store another process holds (they admit one at a time)."""
    return StoreError(f"the embedded store at {location.path} is in use by another process; "
                      "wait for it to finish or set QDRANT_URL to use a Qdrant server")


def operation(call: Callable[..., T]) -> Callable[..., T]:
    """A public store operation: serialised where the backend needs it, errors translated."""

    @functools.wraps(call)
    def wrapper(self: VectorStore, *args: Any, **kwargs: Any) -> T:
        with self._lock, self._errors():
            return call(self, *args, **kwargs)

    return wrapper


class VectorStore(abc.ABC):
    """Ingest semantics over backend primitives. Thread-safe; one instance per process."""

    #: Exact (brute-force) scoring or a graph index; reported by ``describe``.
    embedded: bool = True

    def __init__(self, location: StoreLocation) -> None:
        self.location = location
        # Embedded engines are driven from one thread at a time; a server client needs no lock.
        self._lock: contextlib.AbstractContextManager = (
            threading.RLock() if self.embedded else contextlib.nullcontext())

    # -- primitives each backend provides -------------------------------------------------
    @abc.abstractmethod
    def _errors(self) -> contextlib.AbstractContextManager:
        """Translate backend exceptions into the ingest error hierarchy."""

    @abc.abstractmethod
    def _vectors_config(self, collection: str) -> CollectionShape | None:
        """The shape of an existing collection, ``None`` if missing; raises
        ``CollectionMismatchError`` for a collection of a shape this tool never creates."""

    @abc.abstractmethod
    def _create(self, collection: str, dimension: int) -> None:
        """A collection with the unnamed dense vector (cosine) and the keyword (BM25) sparse
        vectors, ``SPARSE_VECTORS``."""

    @abc.abstractmethod
    def _add_sparse(self, collection: str, shape: CollectionShape, encode: SparseEncode) -> int:
        """Give a collection built by an earlier version the keyword vectors it lacks,
        computed from each point's payload text; dense vectors and payloads stay as they are.
        Safe to run again after a crash. Returns the points filled in."""

    @abc.abstractmethod
    def _drop(self, collection: str) -> None: ...

    @abc.abstractmethod
    def _upsert(self, collection: str, points: Sequence[StoredPoint]) -> None: ...

    @abc.abstractmethod
    def _delete(self, collection: str, ids: Sequence[str]) -> None: ...

    @abc.abstractmethod
    def _set_payload(self, collection: str, ids: Sequence[str], payload: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def _retrieve(self, collection: str, ids: Sequence[str],
                  fields: list[str] | None) -> list[StoredPoint]:
        """Points by ID (missing IDs are left out); ``fields`` None means the whole payload."""

    @abc.abstractmethod
    def _scroll(self, collection: str, offset: Any, limit: int, fields: list[str] | None,
                with_vectors: bool) -> tuple[list[StoredPoint], Any]: ...

    @abc.abstractmethod
    def _query(self, collection: str, dense: Sequence[float] | None, sparse: dict[str, Sparse],
               limit: int, prefetch: int) -> list[SearchHit]:
        """Nearest by ``dense`` (cosine) or by one named sparse vector (BM25 · IDF), or — more
        than one given — their lists of ``prefetch`` candidates fused by reciprocal rank in the
        engine (``RRF_WEIGHTS``)."""

    @abc.abstractmethod
    def _count(self, collection: str) -> int: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def maintain(self, collection: str) -> str | None:
        """Housekeeping after a run (index building); returns what was done, if anything."""
        return None

    def _written(self, collection: str) -> None:
        """After a file's (or a batch's) points are written, with the lock held: a backend that
        keeps its own work bounded as a collection grows does it here."""

    # -- what the pipeline uses ---------------------------------------------------------
    @operation
    def ensure_collection(self, name: str, dimension: int, *, encode: SparseEncode | None = None,
                          recreate_on_mismatch: bool = False) -> str | None:
        """Create the collection (cosine ``dimension``-d dense vectors and BM25 sparse ones) or
        check that the existing one fits; returns what was done to an existing one, if anything.

        Raises ``CollectionMismatchError`` before anything is written when it does not fit —
        unless ``recreate_on_mismatch`` (``--overwrite``), which drops it and starts afresh. A
        collection built before hybrid search, or before the n-gram vectors, gets the keyword
        vectors it lacks from its payload text (``encode``), without re-embedding anything.
        """
        try:
            existing = self._vectors_config(name)
            problem = (None if existing is None or (existing.size, existing.distance) == (dimension, "Cosine")
                       else f"holds {existing.size}-d {existing.distance} vectors")
        except CollectionMismatchError as exc:  # a shape this tool never creates
            existing, problem = None, str(exc)
        if problem is not None:
            if not recreate_on_mismatch:
                raise CollectionMismatchError(
                    f"collection {name!r} {problem} but the model makes {dimension}-d Cosine "
                    "ones; choose another collection, or pass --overwrite to drop and recreate it")
            self._drop(name)
            existing = None
        if existing is None:
            self._create(name, dimension)
            return None
        if existing.complete or encode is None:
            return None
        missing = ", ".join(sorted(set(SPARSE_VECTORS) - existing.sparse))
        log.info("collection %r lacks the keyword vectors %s (built by an earlier version): adding "
                 "them from its payload text; dense vectors are kept", name, missing)
        filled = self._add_sparse(name, existing, encode)
        return f"added keyword vectors ({missing}) to {filled} points (dense vectors kept)"

    @operation
    def file_heads(self, collection: str, sources: list[str]) -> dict[str, FileHead]:
        """Head payloads of the ``sources`` that are indexed: one lookup by ID for a group."""
        if not sources:
            return {}
        return {point.payload[SOURCE]: FileHead.from_payload(point.payload)
                for point in self._retrieve(collection, [point_id(s, HEAD_INDEX) for s in sources], None)}

    def _extents(self, collection: str, sources: Sequence[str]) -> dict[str, int]:
        """How many chunk indexes may hold points of each source (from the heads)."""
        heads = self._retrieve(collection, [point_id(s, HEAD_INDEX) for s in sources],
                               [SOURCE, EXTENT, CHUNK_COUNT])
        return {h.payload[SOURCE]: int(h.payload.get(EXTENT, h.payload.get(CHUNK_COUNT, 1)))
                for h in heads}

    @operation
    def replace_file_points(self, collection: str, source: str, points: Sequence[StoredPoint], *,
                            batch_size: int) -> None:
        """Replace a file's points so that a crash at any step is repaired by the next run.

        Point IDs are deterministic per (source, chunk index), so new points overwrite the old
        version in place and the file never disappears from search. The head point (chunk 0) is
        the commit marker and is written first, incomplete, with ``extent`` covering every index
        the old or the new version may occupy; then the other chunks; then the surplus indexes
        are deleted by ID; only then is the head marked complete.
        """
        count = len(points)
        extent = max(self._extents(collection, [source]).get(source, 0), count)
        head, rest = points[0], list(points[1:])
        head.payload.update({COMPLETE: False, EXTENT: extent})
        self._upsert(collection, [head])
        for begin in range(0, len(rest), batch_size):
            self._upsert(collection, rest[begin:begin + batch_size])
        surplus = [point_id(source, index) for index in range(count, extent)]
        for begin in range(0, len(surplus), batch_size):
            self._delete(collection, surplus[begin:begin + batch_size])
        self._set_payload(collection, [head.id], {COMPLETE: True, EXTENT: count})
        self._written(collection)

    @operation
    def update_signature(self, collection: str, source: str, signature: str | None) -> None:
        """Record a new listing signature on an unchanged file's head (e.g. after a touch)."""
        self._set_payload(collection, [point_id(source, HEAD_INDEX)], {SIGNATURE: signature})

    def iter_points(self, collection: str, *, fields: list[str] | None = None,
                    with_vectors: bool = False, page: int = 1024) -> Iterator[StoredPoint]:
        """Every point of the collection, page by page (for prune, export and migration)."""
        offset = None
        while True:
            with self._lock, self._errors():
                points, offset = self._scroll(collection, offset, page, fields, with_vectors)
            yield from points
            if offset is None:
                return

    def indexed_sources(self, collection: str) -> set[str]:
        """Every source with points in the collection."""
        return {p.payload[SOURCE] for p in self.iter_points(collection, fields=[SOURCE])
                if SOURCE in p.payload}

    @operation
    def delete_sources(self, collection: str, sources: list[str], *, batch_size: int = 256) -> None:
        """Delete every point of ``sources`` (by ID, from each head's extent)."""
        for begin in range(0, len(sources), batch_size):
            extents = self._extents(collection, sources[begin:begin + batch_size])
            ids = [point_id(source, index) for source, extent in extents.items()
                   for index in range(extent)]
            for start in range(0, len(ids), batch_size):
                self._delete(collection, ids[start:start + batch_size])

    @operation
    def upsert_points(self, collection: str, points: Sequence[StoredPoint]) -> None:
        """Write points as they are (migration between backends)."""
        self._upsert(collection, points)
        self._written(collection)

    @operation
    def recorded_runtime(self, collection: str, *, sample: int = 64) -> str | None:
        """The embedding runtime the collection's vectors were made with (``fp32``, ``bf16``,
        ``fp32-openvino``, ``bf16-openvino``: the most common among its first ``sample``
        points), ``None`` for a missing or empty collection. Points from before runtimes were
        recorded count as fp32."""
        if self._vectors_config(collection) is None:
            return None
        points, _ = self._scroll(collection, None, sample, ["embed_precision", "embed_backend"], False)
        labels = Counter(runtime_label(p.payload.get("embed_precision") or "fp32",
                                       p.payload.get("embed_backend") or "torch") for p in points)
        return labels.most_common(1)[0][0] if labels else None

    @operation
    def collection_dimension(self, collection: str) -> int | None:
        """Vector size of an existing collection, ``None`` when it does not exist."""
        config = self._vectors_config(collection)
        return None if config is None else config.size

    @operation
    def shape(self, collection: str) -> CollectionShape | None:
        """The existing collection's vectors, ``None`` when it does not exist."""
        return self._vectors_config(collection)

    @operation
    def search(self, collection: str, *, dense: Sequence[float] | None = None,
               sparse: Keywords | None = None, limit: int, prefetch: int | None = None
               ) -> list[SearchHit]:
        """Best points first: by cosine to ``dense``, by BM25 to ``sparse`` (its words and
        n-grams), or by all fused with reciprocal rank fusion (``prefetch`` candidates of each;
        default ``fusion_depth(limit)``). A collection built before the n-gram vectors is
        searched with the ones it has."""
        shape = self._vectors_config(collection)
        if shape is None:
            raise StoreError(f"collection {collection!r} does not exist; run 'ingest run' first")
        if dense is None and sparse is None:
            raise ValueError("search needs a dense or a sparse query vector")
        if sparse is not None and not shape.sparse:
            raise CollectionMismatchError(
                f"collection {collection!r} has no BM25 vectors yet (built before hybrid "
                "search); any 'ingest run' into it adds them")
        # no indexable word (a query of stopwords) leaves the dense side, if any
        named = {} if sparse is None else {
            name: vector for name, vector in sparse.named().items() if vector and name in shape.sparse}
        if dense is None and not named:
            return []
        return self._query(collection, dense, named, limit, prefetch or fusion_depth(limit))

    @operation
    def count(self, collection: str) -> int:
        """Points in the collection (0 when it does not exist)."""
        if self._vectors_config(collection) is None:
            return 0
        return self._count(collection)
