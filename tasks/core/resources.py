"""The one owner of a process's heavy resources: models, embedders, store handles, parse pool.

Each is created lazily, on first use, and kept for the life of the process (a Dask worker
process loads the model once and keeps it across tasks); ``close`` releases the stores and the
parse pool, and runs at interpreter exit. The model runs on the owner's model thread, started
with the owner (``scheduling``). Stores are also closed at the end of each run (``close_stores``): an
embedded store admits one process at a time, and the next run may be another process.

The owner also keeps the retry memo of task runs (``retry_memo``): which files an attempt
finished, so that Prefect's retry of a task redoes only the files that hit a transient fault.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from tasks.core.chunking import Chunker
from tasks.core.embedding import Embedder, LoadedModel, load_model, make_embedder, resolve_model
from tasks.core.heap import release_freed_memory
from tasks.core.ids import vectors_label
from tasks.core.isolation import ParsePool, isolation_available
from tasks.core.models import Document
from tasks.core.precision import RuntimeChoice, choose_runtime
from tasks.core.query_encoder import QueryEncoder, keep_query_encoder, load_query_encoder
from tasks.core.readers import read_pdf
from tasks.core.scheduling import ModelThread
from tasks.core.settings import IngestSettings, PipelineConfig, StoreLocation
from tasks.core.sparse import Bm25Encoder
from tasks.core.store import VectorStore, open_store

log = logging.getLogger(__name__)


class Resources:
    """A process's models, embedders, stores and parse pool; thread-safe."""

    def __init__(self) -> None:
        # The model gives up a core to each parse worker at work (``scheduling``).
        self._model_thread = ModelThread(busy_elsewhere=self._parsers_busy)
        self._lock = threading.RLock()
        self._models: dict[str, LoadedModel] = {}
        self._embedders: dict[tuple[str, str], Embedder] = {}
        self._runtimes: dict[tuple[str, str], RuntimeChoice] = {}
        self._query_encoders: dict[str, QueryEncoder | None] = {}
        self._kept_query_encoders: set[str] = set()
        self._chunkers: dict[tuple, Chunker] = {}
        self._bm25: Bm25Encoder | None = None
        self._stores: dict[StoreLocation, VectorStore] = {}
        self._pool: tuple[tuple, ParsePool] | None = None
        self._memos: dict[Any, dict] = {}
        #: How many times this process loaded a model (a Dask test checks it stays at one).
        self.model_loads = 0

    # -- the model ----------------------------------------------------------------------
    def model(self, name: str) -> LoadedModel:
        """The loaded model ``name`` (loaded on first use)."""
        with self._lock:
            loaded = self._models.get(name)
            if loaded is None:
                # On the model thread, like every later call of the model.
                loaded = self._models[name] = self._model_thread.run(
                    lambda: load_model(name, self._model_thread))
                self.model_loads += 1
                _freeze_long_lived()
            return loaded

    def embedder(self, name: str, runtime: str = "fp32") -> Embedder:
        """The model ``name`` on ``runtime`` (one of ``embedding.RUNTIMES``)."""
        with self._lock:
            embedder = self._embedders.get((name, runtime))
            if embedder is None:
                loaded = self.model(name)
                # On the model thread too: OpenVINO starts its inference threads when it compiles.
                cache_dir = IngestSettings().cache_dir
                embedder = self._embedders[(name, runtime)] = self._model_thread.run(
                    lambda: make_embedder(name, loaded, runtime, cache_dir=cache_dir))
            return embedder

    def keep_query_encoder(self, name: str) -> None:
        """Keep, once per process, what later processes' searches need to embed a query for the
        model ``name`` without torch (``query_encoder.keep_query_encoder``: a stat when kept
        already; the first time per model and install ~1-3 s, the conversion included)."""
        with self._lock:
            if name in self._kept_query_encoders:
                return
            self._kept_query_encoders.add(name)
        keep_query_encoder(self.embedder(name), IngestSettings().cache_dir)

    def query_embedder(self, name: str) -> Embedder | QueryEncoder:
        """What embeds search queries for the model ``name`` (``embed_query``): the loaded model
        if this process has it; else, without loading torch, the query encoder an earlier
        process kept (``query_encoder``); else the model, loaded now — and the query encoder
        made and kept for the next process."""
        with self._lock:
            if name in self._models:
                return self.embedder(name)
            encoder = self._query_encoders.get(name)
            if encoder is None and name not in self._query_encoders:
                encoder = self._query_encoders[name] = load_query_encoder(
                    IngestSettings().cache_dir, resolve_model(name))
            if encoder is not None:
                return encoder
            self.keep_query_encoder(name)
            return self.embedder(name)

    def runtime_choice(self, name: str, precision: str, vectors: str | None = None) -> RuntimeChoice:
        """The runtime ``INGEST_EMBED_PRECISION=precision`` selects on this CPU, and why
        (measured once per process: ``precision.choose_runtime``); with ``vectors``, among the
        runtimes that make those (a collection's, e.g. ``fp32``)."""
        key = (name, precision) if vectors is None else (name, precision, vectors)
        with self._lock:
            choice = self._runtimes.get(key)
            unrestricted = self._runtimes.get((name, precision))
            if choice is None and unrestricted is not None and vectors_label(unrestricted.runtime) == vectors:
                # The fastest of all makes these vectors: it is the fastest of those that do.
                choice = self._runtimes[key] = unrestricted
            if choice is None:
                loaded = self.model(name)
                context = "" if vectors is None else f", a collection of {vectors} vectors"
                before = set(self._embedders)
                choice = self._runtimes[key] = choose_runtime(
                    name, loaded.model, precision, lambda r: self.embedder(name, r),
                    vectors=vectors, context=context)
                self._drop_trials(name, set(self._embedders) - before, keep=choice.runtime)
            return choice

    def _drop_trials(self, name: str, tried: set[tuple[str, str]], *, keep: str) -> None:
        """Let go of the runtimes a choice built and did not pick. An OpenVINO runtime holds its
        compiled model and the buffers of its largest batch yet: on a CPU with AMX, the fp32
        runtime that lost to bf16 held ~170 MB after the probe, for the rest of the process —
        the default's peak on the bench's real documents 1.23 GB, over the 1.2 GB it is held to
        (December 5). fp32 on torch is the loaded model itself and stays."""
        dropped = [self._embedders.pop(k) for k in tried if k[0] == name and k[1] not in (keep, "fp32")]
        if dropped:
            del dropped
            gc.collect()
            release_freed_memory()

    def runtime_for(self, name: str, precision: str) -> str:
        """The runtime of ``runtime_choice``."""
        return self.runtime_choice(name, precision).runtime

    def embedder_for(self, config: PipelineConfig) -> Embedder:
        """The embedder a run uses: its chosen runtime, or this process's choice."""
        runtime = config.embed_runtime or self.runtime_for(config.model, config.embed_precision)
        return self.embedder(config.model, runtime)

    def chunker(self, config: PipelineConfig) -> Chunker:
        """The chunker for a run's model and chunk size."""
        key = (config.model, config.chunk_tokens, config.chunk_overlap)
        with self._lock:
            chunker = self._chunkers.get(key)
            if chunker is None:
                loaded = self.model(config.model)
                chunker = self._chunkers[key] = Chunker(
                    loaded.tokenizer, chunk_tokens=config.chunk_tokens,
                    overlap=config.chunk_overlap, max_tokens=loaded.max_tokens)
            return chunker

    def bm25(self) -> Bm25Encoder:
        """The BM25 encoder of documents and queries, words and 4-grams (the sparse half of
        hybrid search)."""
        with self._lock:
            if self._bm25 is None:
                self._bm25 = Bm25Encoder()
            return self._bm25

    # -- stores ---------------------------------------------------------------------------
    def store(self, location: StoreLocation) -> VectorStore:
        """The store at ``location`` (opened on first use)."""
        with self._lock:
            store = self._stores.get(location)
            if store is None:
                store = self._stores[location] = open_store(location, api_key=_server_api_key(location))
            return store

    def close_store(self, location: StoreLocation) -> None:
        """Close the store at ``location`` if open (flushes an embedded one and releases its
        folder lock); the next use reopens it."""
        with self._lock:
            store = self._stores.pop(location, None)
        if store is not None:
            store.close()

    def close_stores(self) -> None:
        """Close every open store."""
        with self._lock:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            store.close()

    # -- PDF parsing ----------------------------------------------------------------------
    def parse_pdf(self, config: PipelineConfig) -> Callable[..., Document]:
        """Where this process parses PDFs: a pool of limited worker processes, unless this
        process may not start children (then in-process, without the limits)."""
        if not isolation_available():
            return read_pdf
        key = (config.parse_workers, config.parse_timeout_s, config.parse_memory_mb)
        with self._lock:
            if self._pool is None or self._pool[0] != key:
                if self._pool is not None:
                    self._pool[1].close()
                self._pool = (key, ParsePool(workers=config.parse_workers,
                                             timeout_s=config.parse_timeout_s,
                                             memory_mb=config.parse_memory_mb))
            return self._pool[1].read_pdf

    def _parsers_busy(self) -> int:
        # Called on the model thread between batches: no lock (a caller may hold it while it
        # waits for the model thread), one read of the current pool.
        pool = self._pool
        return pool[1].busy if pool is not None else 0

    # -- retries --------------------------------------------------------------------------
    @contextlib.contextmanager
    def retry_memo(self, key: Any, *, last_attempt: bool) -> Iterator[dict]:
        """What earlier attempts of ``key`` (a task run) finished, kept across its retries.

        Dropped when an attempt returns or fails for good; kept while it fails in a way that
        will be retried (``TransientError`` before the last attempt).
        """
        from tasks.core.errors import TransientError

        with self._lock:
            memo = self._memos.setdefault(key, {})
        try:
            yield memo
        except TransientError:
            if last_attempt:
                self._forget(key)
            raise
        except BaseException:
            self._forget(key)
            raise
        self._forget(key)

    def _forget(self, key: Any) -> None:
        with self._lock:
            self._memos.pop(key, None)

    def close(self) -> None:
        """Release the stores (flushed and unlocked) and the parse workers; models stay loaded
        for the life of the process."""
        self.close_stores()
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool[1].close()


def _freeze_long_lived() -> None:
    """Leave what exists once a model is loaded out of the cyclic garbage collector's passes.

    The imported stacks (torch, transformers, Prefect, ...) and the model are ~540k objects that
    live as long as the process; every full collection walked them all — ~0.3 s holding the
    GIL, which the model thread needs to launch its next operator — and a run makes one per
    group (``flows.ingest_flow``) besides Python's own: 4.2 s of a 300-file fp32 run's flow,
    0.07 s with them frozen. Collected first, so that no garbage is frozen with them.
    """
    gc.collect()
    gc.freeze()


def _server_api_key(location: StoreLocation) -> str | None:
    """A Qdrant server's key, read from this process's environment: it never travels in
    parameters or configs."""
    if location.kind != "qdrant-server":
        return None
    secret = IngestSettings().qdrant_api_key
    return secret.get_secret_value() if secret else None


_owner: Resources | None = None
_owner_lock = threading.Lock()


def resources() -> Resources:
    """This process's owner of heavy resources, created on first use, closed at exit."""
    global _owner
    with _owner_lock:
        if _owner is None:
            _owner = Resources()
            atexit.register(_owner.close)
        return _owner
