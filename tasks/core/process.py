"""One file's chain — read, chunk, embed, store — and a group of files run together.

Nothing here knows about Prefect. ``FileProcessor.process`` turns every permanent problem into
the file's ``FileOutcome`` and lets only ``TransientError`` escape, for the caller to retry.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import PurePosixPath

from tasks.core.chunking import Chunker
from tasks.core.embedding import Embedder, get_embedder
from tasks.core.errors import FileRejected, StoreError, TransientError
from tasks.core.ids import config_fingerprint, point_id
from tasks.core.models import Document, FileOutcome, Reason, SourceFile, Status
from tasks.core.isolation import isolation_available, parse_pool
from tasks.core.readers import HEAD_BYTES, TEXT_SUFFIXES, read_document, read_pdf, sniff_kind
from tasks.core.settings import PipelineConfig
from tasks.core.sources import read_bytes
from tasks.core.store import FileHead, StoredPoint, VectorStore, get_store

log = logging.getLogger(__name__)


class RetryableFilesError(TransientError):
    """Some files of a group hit transient faults; the others are done and remembered."""

    def __init__(self, failures: list[tuple[SourceFile, TransientError]]) -> None:
        self.failures = failures
        names = ", ".join(f.name for f, _ in failures[:5])
        first = failures[0][1]
        super().__init__(f"{len(failures)} file(s) hit a transient fault ({names}): {first}")


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
        return config_fingerprint(model=self.config.model, chunk_tokens=self.config.chunk_tokens,
                                  chunk_overlap=self.config.chunk_overlap)

    def known_files(self, files: list[SourceFile]) -> dict[str, FileHead]:
        """What the collection already holds for these files (one store request)."""
        return self.store.file_heads(self.config.collection, [f.uri for f in files])

    def process(self, file: SourceFile, known: FileHead | None = None) -> FileOutcome:
        """Ingest one file and say what happened; raises only ``TransientError``.

        ``known`` is the file's head in the store (from ``known_files``), if it has one.
        """
        started = time.perf_counter()
        try:
            return self._process(file, known, started)
        except FileRejected as exc:
            return FileOutcome.rejected(file.uri, exc.reason, exc.detail, pages=exc.pages,
                                        seconds=time.perf_counter() - started)
        except TransientError:
            raise
        except StoreError as exc:
            return FileOutcome.rejected(file.uri, Reason.ERROR, f"store refused the write: {exc}",
                                        seconds=time.perf_counter() - started)
        except Exception as exc:  # an unforeseen library error must cost one file, not the batch
            log.exception("unexpected error on %s", file.uri)
            return FileOutcome.rejected(file.uri, Reason.ERROR, f"{type(exc).__name__}: {exc}",
                                        seconds=time.perf_counter() - started)

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

    def _process(self, file: SourceFile, known: FileHead | None, started: float) -> FileOutcome:
        # A head from a finished write with today's settings is what "already indexed" means.
        current = (known if known is not None and known.complete and not self.config.overwrite
                   and known.config_fingerprint == self.fingerprint else None)
        if current is not None and file.signature is not None and current.signature == file.signature:
            return self._unchanged(file, current, started)  # the listing suffices: no download
        data = self._read(file)
        sha = hashlib.sha256(data).hexdigest()
        if current is not None and current.content_sha256 == sha:
            # Same bytes under a new signature (touched, re-uploaded): remember the new one.
            self.store.update_signature(self.config.collection, file.uri, file.signature)
            return self._unchanged(file, current, started)
        document = read_document(data, file.name, max_pages=self.config.max_pages,
                                 parse_pdf=self._parse_pdf())
        chunks = self.chunker.chunk_document(document)
        if not chunks:
            raise FileRejected(Reason.NO_TEXT, "no words to index after extraction",
                               pages=document.page_count)
        vectors = self.embedder.embed([c.text for c in chunks], [c.token_count for c in chunks],
                                      batch_size=self.config.embed_batch_size)
        self.store.replace_file_points(self.config.collection, file.uri,
                                       self._points(file, document, sha, chunks, vectors),
                                       batch_size=self.config.upsert_batch)
        detail = ""
        if document.unreadable_pages:
            detail = f"text extraction failed on page(s) {list(document.unreadable_pages)}"
        return FileOutcome(source=file.uri, status=Status.INDEXED if known is None else Status.UPDATED,
                           detail=detail, pages=document.page_count, chunks=len(chunks),
                           seconds=round(time.perf_counter() - started, 3))

    def _points(self, file: SourceFile, document: Document, sha: str, chunks,
                vectors) -> list[StoredPoint]:
        ingested_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        common = {"source": file.uri, "file_name": file.name, "content_sha256": sha,
                  "config_fingerprint": self.fingerprint, "chunk_count": len(chunks),
                  "page_count": document.page_count, "source_signature": file.signature,
                  "model": self.config.model, "ingested_at": ingested_at}
        return [StoredPoint(id=point_id(file.uri, chunk.chunk_index), vector=vector.tolist(),
                            payload={"text": chunk.text, "chunk_index": chunk.chunk_index,
                                     "page_start": chunk.page_start, "page_end": chunk.page_end,
                                     "char_start": chunk.char_start, "char_end": chunk.char_end,
                                     "token_count": chunk.token_count, **common})
                for chunk, vector in zip(chunks, vectors)]


@lru_cache(maxsize=8)
def processor_for(config: PipelineConfig) -> FileProcessor:
    """The process-wide processor for a config: model and client are loaded once, lazily."""
    embedder = get_embedder(config.model)
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

    Files that hit a transient fault are collected; after the rest of the group is done they
    are raised together as ``RetryableFilesError`` so a retry redoes only them — unless
    ``give_up`` (the last attempt), when they become ``failed`` outcomes with their reason.
    """
    files = list(files)
    pending = [file for file in files if file.uri not in done]
    failures: list[tuple[SourceFile, TransientError]] = []
    try:
        known = processor.known_files(pending) if pending else {}
    except TransientError as exc:
        known, failures, pending = {}, [(file, exc) for file in pending], []
    for file in pending:
        try:
            done[file.uri] = processor.process(file, known.get(file.uri))
        except TransientError as exc:
            failures.append((file, exc))
    if failures and not give_up:
        raise RetryableFilesError(failures)
    for file, exc in failures:
        done[file.uri] = FileOutcome.rejected(file.uri, exc.reason, f"gave up after retries: {exc}")
    return [done[file.uri] for file in files]
