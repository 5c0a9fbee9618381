"""One file's chain — read, chunk, embed, store — and a group of files run together.

Nothing here knows about Prefect. ``FileProcessor.process`` turns every permanent problem into
the file's ``FileOutcome`` and lets only ``TransientError`` escape, for the caller to retry.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import PurePosixPath

from tasks.core.chunking import Chunker
from tasks.core.embedding import Embedder, select_embedder
from tasks.core.errors import FileRejected, StoreError, TransientError
from tasks.core.ids import config_fingerprint, point_id
from tasks.core.isolation import isolation_available, parse_pool
from tasks.core.models import Chunk, Document, FileOutcome, Reason, SourceFile, Status
from tasks.core.readers import (
    HEAD_BYTES,
    TEXT_SUFFIXES,
    read_document,
    read_pdf,
    sniff_kind,
)
from tasks.core.settings import PipelineConfig
from tasks.core.sources import display_name, read_bytes
from tasks.core.store import FileHead, StoredPoint, VectorStore, get_store

log = logging.getLogger(__name__)


class RetryableFilesError(TransientError):
    """Some files of a group hit transient faults; the others are done and remembered."""

    def __init__(self, failures: list[tuple[str, TransientError]]) -> None:
        self.failures = failures  # (source URI, fault)
        names = ", ".join(display_name(uri) for uri, _ in failures[:5])
        first = failures[0][1]
        super().__init__(f"{len(failures)} file(s) hit a transient fault ({names}): {first}")


@dataclass(frozen=True)
class PreparedFile:
    """A file after ``prepare``: its outcome, and what ``commit`` must write (if anything)."""

    outcome: FileOutcome
    points: list[StoredPoint] | None = None
    new_signature: str | None = None


@dataclass(frozen=True)
class _Extracted:
    """A file read, parsed and chunked, waiting for its group's embedding call."""

    file: SourceFile
    known: FileHead | None
    sha: str
    document: Document
    chunks: list[Chunk]
    seconds: float  # spent on this file so far


@dataclass
class FileProcessor:
    """Runs the chain for single files with shared, already-loaded resources."""

    config: PipelineConfig
    embedder: Embedder
    chunker: Chunker

    @property
    def store(self) -> VectorStore:
        # Looked up per use, not held: a run closes its embedded store when it ends (so the
        # next process can open it), and the next run in this process reopens it.
        return get_store(self.config.store)

    @property
    def fingerprint(self) -> str:
        # The precision actually used (bf16 may fall back to fp32): vectors of different
        # precisions are never mixed silently in one collection.
        return config_fingerprint(model=self.config.model, chunk_tokens=self.config.chunk_tokens,
                                  chunk_overlap=self.config.chunk_overlap,
                                  precision=self.embedder.label)

    def known_files(self, files: list[SourceFile]) -> dict[str, FileHead]:
        """What the collection already holds for these files (one store request)."""
        return self.store.file_heads(self.config.collection, [f.uri for f in files])

    def process(self, file: SourceFile, known: FileHead | None = None) -> FileOutcome:
        """Ingest one file and say what happened; raises only ``TransientError``.

        ``known`` is the file's head in the store (from ``known_files``), if it has one.
        """
        return self.commit(self.prepare(file, known))

    def prepare(self, file: SourceFile, known: FileHead | None = None) -> PreparedFile:
        """Everything but the store write for one file; raises only ``TransientError``."""
        prepared, failures = self.prepare_group([file], {file.uri: known} if known else {})
        if failures:
            raise failures[0][1]
        return prepared[file.uri]

    def prepare_group(self, files: list[SourceFile], known: dict[str, FileHead]
                      ) -> tuple[dict[str, PreparedFile], list[tuple[str, TransientError]]]:
        """Read, parse, chunk and embed ``files``, all their chunks embedded together.

        One embedding call for the group lets the batches be planned over every file's chunks:
        a file's own few chunks of uneven length would waste ~20% of the model's work on
        padding. Returns each file's ``PreparedFile`` (permanent problems are outcomes) and the
        files that hit a transient fault, for the caller to retry. Runs anywhere the model is
        (a Dask worker, say); ``commit`` runs where the store is.
        """
        prepared: dict[str, PreparedFile] = {}
        failures: list[tuple[str, TransientError]] = []
        extracted: list[_Extracted] = []
        for file in files:
            started = time.perf_counter()
            try:
                step = self._guarded(file, started, lambda: self._extract(file, known.get(file.uri), started))
            except TransientError as exc:
                failures.append((file.uri, exc))
                continue
            if isinstance(step, PreparedFile):
                prepared[file.uri] = step
            else:
                extracted.append(step)
        for item, vectors, seconds in self._embed_together(extracted):
            prepared[item.file.uri] = self._guarded(
                item.file, time.perf_counter() - item.seconds - seconds,
                lambda: self._finish(item, vectors, seconds))
        return {f.uri: prepared[f.uri] for f in files if f.uri in prepared}, failures

    def _guarded(self, file: SourceFile, started: float, step: Callable):
        """Run one file's ``step``: a permanent problem becomes the file's outcome."""
        try:
            return step()
        except FileRejected as exc:
            return PreparedFile(FileOutcome.rejected(file.uri, exc.reason, exc.detail, pages=exc.pages,
                                                     seconds=time.perf_counter() - started))
        except TransientError:
            raise
        except Exception as exc:  # an unforeseen library error must cost one file, not the batch
            log.exception("unexpected error on %s", file.uri)
            return PreparedFile(FileOutcome.rejected(file.uri, Reason.ERROR, f"{type(exc).__name__}: {exc}",
                                                     seconds=time.perf_counter() - started))

    def _embed_together(self, items: list[_Extracted]):
        """Yield (item, its vectors or the error that stopped them, its share of the embedding
        seconds) for every item. If the joint call fails, each file is embedded alone, so the
        one file that breaks the model gets the error and the others still get vectors."""
        if not items:
            return
        counts = [c.token_count for item in items for c in item.chunks]
        started = time.perf_counter()
        try:
            vectors = self.embedder.embed([c.text for item in items for c in item.chunks], counts,
                                          batch_size=self.config.embed_batch_size)
        except Exception as exc:
            if len(items) == 1:
                yield items[0], exc, time.perf_counter() - started
                return
            log.warning("embedding %d files together failed; embedding them one by one", len(items))
            for item in items:
                yield from self._embed_together([item])
            return
        seconds = time.perf_counter() - started
        total, offset = max(1, len(counts)), 0
        for item in items:
            yield item, vectors[offset:offset + len(item.chunks)], seconds * len(item.chunks) / total
            offset += len(item.chunks)

    def commit(self, prepared: PreparedFile) -> FileOutcome:
        """Write what ``prepare`` produced; raises only ``TransientError``."""
        outcome = prepared.outcome
        started = time.perf_counter()
        try:
            if prepared.points is not None:
                self.store.replace_file_points(self.config.collection, outcome.source,
                                               prepared.points, batch_size=self.config.upsert_batch)
            elif prepared.new_signature is not None:
                self.store.update_signature(self.config.collection, outcome.source,
                                            prepared.new_signature)
        except TransientError:
            raise
        except StoreError as exc:
            return FileOutcome.rejected(outcome.source, Reason.ERROR, f"store refused the write: {exc}",
                                        seconds=outcome.seconds + time.perf_counter() - started)
        return outcome.model_copy(update={"seconds": round(outcome.seconds + time.perf_counter() - started, 3)})

    def _read(self, file: SourceFile) -> bytes:
        limit = self.config.max_file_bytes
        if file.size is not None and file.size > limit:
            raise FileRejected(Reason.TOO_LARGE, f"{file.size} bytes, over the limit of {limit}")
        if PurePosixPath(file.name).suffix.lower() not in TEXT_SUFFIXES | {".pdf"}:
            # Other names are only worth downloading when the content says PDF: sniff_kind
            # raises unsupported_type (naming what the content is) for anything else.
            sniff_kind(read_bytes(file, limit=HEAD_BYTES), file.name)
        data = read_bytes(file, limit=limit + 1)
        if len(data) > limit:
            raise FileRejected(Reason.TOO_LARGE, f"over the limit of {limit} bytes")
        return data

    def _parse_pdf(self):
        """Where this process parses PDFs: a limited worker pool, unless it may not have one."""
        if not isolation_available():
            return read_pdf
        c = self.config
        return parse_pool(workers=c.parse_workers, timeout_s=c.parse_timeout_s,
                          memory_mb=c.parse_memory_mb).read_pdf

    def _unchanged(self, file: SourceFile, head: FileHead, started: float) -> FileOutcome:
        return FileOutcome(source=file.uri, status=Status.UNCHANGED, reason=Reason.UNCHANGED,
                           detail="already indexed with the same content and settings",
                           chunks=head.chunk_count, pages=head.page_count,
                           seconds=round(time.perf_counter() - started, 3))

    def _extract(self, file: SourceFile, known: FileHead | None, started: float) -> _Extracted | PreparedFile:
        """Read, parse and chunk; a ``PreparedFile`` when there is nothing to embed."""
        # A head from a finished write with today's settings is what "already indexed" means.
        current = (known if known is not None and known.complete and not self.config.overwrite
                   and known.config_fingerprint == self.fingerprint else None)
        if current is not None and file.signature is not None and current.signature == file.signature:
            return PreparedFile(self._unchanged(file, current, started))  # no download needed
        data = self._read(file)
        sha = hashlib.sha256(data).hexdigest()
        if current is not None and current.content_sha256 == sha:
            # Same bytes under a new signature (touched, re-uploaded): remember the new one.
            return PreparedFile(self._unchanged(file, current, started), new_signature=file.signature)
        document = read_document(data, file.name, max_pages=self.config.max_pages,
                                 parse_pdf=self._parse_pdf())
        chunks = self.chunker.chunk_document(document)
        if not chunks:
            raise FileRejected(Reason.NO_TEXT, "no words to index after extraction",
                               pages=document.page_count)
        return _Extracted(file=file, known=known, sha=sha, document=document, chunks=chunks,
                          seconds=time.perf_counter() - started)

    def _finish(self, item: _Extracted, vectors, embed_seconds: float) -> PreparedFile:
        """The file's points and outcome, once its vectors are back."""
        if isinstance(vectors, Exception):
            raise vectors
        document = item.document
        detail = ""
        if document.unreadable_pages:
            detail = f"text extraction failed on page(s) {list(document.unreadable_pages)}"
        seconds = item.seconds + embed_seconds  # its share of the group's embedding call
        outcome = FileOutcome(source=item.file.uri,
                              status=Status.INDEXED if item.known is None else Status.UPDATED,
                              detail=detail, pages=document.page_count, chunks=len(item.chunks),
                              seconds=round(seconds, 3))
        return PreparedFile(outcome, points=self._points(item.file, document, item.sha, item.chunks, vectors))

    def _points(self, file: SourceFile, document: Document, sha: str, chunks,
                vectors) -> list[StoredPoint]:
        ingested_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        common = {"source": file.uri, "file_name": file.name, "content_sha256": sha,
                  "config_fingerprint": self.fingerprint, "chunk_count": len(chunks),
                  "page_count": document.page_count, "source_signature": file.signature,
                  "model": self.config.model, "embed_precision": self.embedder.precision,
                  "embed_backend": self.embedder.backend,
                  "ingested_at": ingested_at}
        return [StoredPoint(id=point_id(file.uri, chunk.chunk_index), vector=vector.tolist(),
                            payload={"text": chunk.text, "chunk_index": chunk.chunk_index,
                                     "page_start": chunk.page_start, "page_end": chunk.page_end,
                                     "char_start": chunk.char_start, "char_end": chunk.char_end,
                                     "token_count": chunk.token_count, **common})
                for chunk, vector in zip(chunks, vectors)]


@lru_cache(maxsize=8)
def processor_for(config: PipelineConfig) -> FileProcessor:
    """The process-wide processor for a config: model and client are loaded once, lazily."""
    embedder = select_embedder(config.model, config.embed_precision)
    chunker = Chunker(embedder.tokenizer, chunk_tokens=config.chunk_tokens,
                      overlap=config.chunk_overlap, max_tokens=embedder.max_tokens)
    return FileProcessor(config=config, embedder=embedder, chunker=chunker)


def prepare_store(config: PipelineConfig) -> int:
    """Validate the config against the model and make the collection ready; returns its size.

    With ``overwrite``, a collection whose vectors do not fit the model is dropped and recreated.
    """
    get_store(config.store).collection_dimension(config.collection)  # in use? say so before the model loads
    processor = processor_for(config)
    processor.store.ensure_collection(config.collection, processor.embedder.dimension,
                                      recreate_on_mismatch=config.overwrite)
    return processor.embedder.dimension


def process_files(processor: FileProcessor, files: Iterable[SourceFile], *,
                  done: MutableMapping[str, FileOutcome], give_up: bool) -> list[FileOutcome]:
    """Process every file of a group not yet in ``done`` (which is updated as files finish).

    The group's chunks are embedded together (``prepare_group``), then each file is written.
    Files that hit a transient fault are collected; after the rest of the group is done they
    are raised together as ``RetryableFilesError`` so a retry redoes only them — unless
    ``give_up`` (the last attempt), when they become ``failed`` outcomes with their reason.
    """
    files = list(files)
    uris = [f.uri for f in files]
    pending = [file for file in files if file.uri not in done]
    if not pending:
        return _settle(uris, done, [], give_up)
    try:
        known = processor.known_files(pending)
    except TransientError as exc:
        return _settle(uris, done, [(f.uri, exc) for f in pending], give_up)
    prepared, failures = processor.prepare_group(pending, known)
    failures += _commit_each(list(prepared.values()), processor.commit, done=done)
    return _settle(uris, done, sorted(failures, key=lambda f: uris.index(f[0])), give_up)


def prepare_files(processor: FileProcessor, files: Iterable[SourceFile], known: dict[str, FileHead], *,
                  done: MutableMapping[str, PreparedFile], give_up: bool) -> list[PreparedFile]:
    """``process_files`` without the store (for Dask workers): ``known`` heads come from the
    caller, and the results go back to where the store is, for ``commit_files``."""
    files = list(files)
    pending = [file for file in files if file.uri not in done]
    prepared, failures = processor.prepare_group(pending, known) if pending else ({}, [])
    done.update(prepared)
    return _settle([f.uri for f in files], done, failures, give_up, PreparedFile)


def commit_files(processor: FileProcessor, prepared: Iterable[PreparedFile], *,
                 done: MutableMapping[str, FileOutcome], give_up: bool) -> list[FileOutcome]:
    """Write prepared files where the store is; transient store faults as in ``process_files``."""
    prepared = list(prepared)
    failures = _commit_each([item for item in prepared if item.outcome.source not in done],
                            processor.commit, done=done)
    return _settle([item.outcome.source for item in prepared], done, failures, give_up)


def _commit_each(prepared: list[PreparedFile], commit: Callable, *,
                 done: MutableMapping) -> list[tuple[str, TransientError]]:
    """Commit every prepared file into ``done``; return the ones that failed transiently."""
    failures = []
    for item in prepared:
        try:
            done[item.outcome.source] = commit(item)
        except TransientError as exc:
            failures.append((item.outcome.source, exc))
    return failures


def _settle(uris: list[str], done: MutableMapping, failures: list[tuple[str, TransientError]],
            give_up: bool, wrap: Callable = lambda outcome: outcome) -> list:
    """Raise the transient failures for a retry, or (last attempt) turn them into outcomes."""
    if failures and not give_up:
        raise RetryableFilesError(failures)
    for uri, exc in failures:
        done[uri] = wrap(FileOutcome.rejected(uri, exc.reason, f"gave up after retries: {exc}"))
    return [done[uri] for uri in uris]
