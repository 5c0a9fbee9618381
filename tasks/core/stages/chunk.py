"""The ``chunk`` stage: each read file's text cut into token-aware chunks with page ranges.

Deterministic and local: nothing here is retried.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tasks.core.chunking import Chunker
from tasks.core.errors import FileRejected
from tasks.core.models import Chunk, Reason, SourceFile
from tasks.core.stages.group import Group, Settled, settle_rejection
from tasks.core.stages.read import ReadFile

STAGE = "chunk"


@dataclass(frozen=True)
class ChunkedFile:
    """A file as chunks, with what its points and outcome need of the document."""

    file: SourceFile
    chunks: tuple[Chunk, ...]
    content_sha256: str
    page_count: int | None
    #: Pages read by OCR, and pages found without a text layer (PDFs; see ``Document``).
    ocr_pages: int
    textless_pages: int | None
    #: What the file's row says about its extraction (failed pages, parser warnings, repairs).
    notes: tuple[str, ...]
    replaces: bool
    seconds: float


def chunk(group: Group[ReadFile], chunker: Chunker, *, max_chunks: int | None = None) -> Group[ChunkedFile]:
    """Chunk every file of the group; a file without words to index is ``no_text``, one with
    more than ``max_chunks`` chunks ``too_large``."""
    started = time.perf_counter()
    results = [settle_rejection(item.file.uri, time.perf_counter(),
                                lambda item=item: chunk_file(item, chunker, max_chunks))
               for item in group.files]
    return group.then(STAGE, time.perf_counter() - started,
                      files=[r for r in results if isinstance(r, ChunkedFile)],
                      settled=[r for r in results if isinstance(r, Settled)])


def chunk_file(item: ReadFile, chunker: Chunker, max_chunks: int | None = None) -> ChunkedFile:
    """One file's chunks, or ``FileRejected`` (``no_text``, ``too_large``)."""
    started = time.perf_counter()
    document = item.document
    chunks = chunker.chunk_document(document)
    if not chunks:
        raise FileRejected(Reason.NO_TEXT, "no words to index after extraction",
                           pages=document.page_count)
    if max_chunks is not None and len(chunks) > max_chunks:
        raise FileRejected(Reason.TOO_LARGE, f"{len(chunks):,} chunks, more than the limit of "
                                             f"{max_chunks:,} (INGEST_MAX_FILE_CHUNKS)",
                           pages=document.page_count)
    return ChunkedFile(file=item.file, chunks=tuple(chunks), content_sha256=document.content_sha256,
                       page_count=document.page_count, ocr_pages=document.ocr_pages,
                       textless_pages=document.textless_pages if document.page_count is not None else None,
                       notes=document.notes(),
                       replaces=item.replaces,
                       seconds=item.seconds + time.perf_counter() - started)
