"""Typed records that travel through the pipeline.

Records that cross a Prefect task boundary (``SourceFile``, ``FileOutcome``, ``RunSummary``)
are frozen pydantic models so they serialise cleanly; records that stay inside one file's
processing (``Page``, ``Document``, ``Chunk``) are frozen dataclasses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    # Not at run time: the PDF parse workers import these records, and numpy (with OpenBLAS)
    # would take ~125 MB of a worker's capped address space before it parses anything.
    import numpy as np


class Status(str, enum.Enum):
    """What happened to a file, in one word."""

    INDEXED = "indexed"      # new in the collection
    UPDATED = "updated"      # replaced an older version (content or settings changed)
    UNCHANGED = "unchanged"  # already indexed as it is: nothing embedded
    SKIPPED = "skipped"
    FAILED = "failed"
    DELETED = "deleted"      # pruned: no longer in the source


class Reason(str, enum.Enum):
    """Why a file was not indexed (``ok`` when it was)."""

    OK = "ok"
    UNCHANGED = "unchanged"
    NOT_IN_SOURCE = "not_in_source"
    UNSUPPORTED_TYPE = "unsupported_type"
    EMPTY = "empty"
    NO_TEXT = "no_text"
    ENCRYPTED = "encrypted"
    CORRUPT = "corrupt"
    UNDECODABLE = "undecodable"
    TOO_LARGE = "too_large"
    TIMEOUT = "timeout"
    PARSER_CRASHED = "parser_crashed"
    NOT_FOUND = "not_found"
    OUTSIDE_SOURCE = "outside_source"
    ACCESS_DENIED = "access_denied"
    SOURCE_UNAVAILABLE = "source_unavailable"
    STORE_UNAVAILABLE = "store_unavailable"
    ERROR = "error"


# Reasons a user has nothing to fix for: the file was deliberately passed over.
SKIP_REASONS = frozenset({Reason.UNSUPPORTED_TYPE, Reason.EMPTY, Reason.OUTSIDE_SOURCE})


class DocumentKind(str, enum.Enum):
    PDF = "pdf"
    TEXT = "text"


class SourceFile(BaseModel):
    """One file found in a batch source, as listed (nothing read yet)."""

    model_config = ConfigDict(frozen=True)

    uri: str = Field(description="Stable identity: file:///abs/path or s3://bucket/key")
    protocol: str = Field(description="fsspec protocol: 'file' or 's3'")
    path: str = Field(description="Path as the filesystem expects it")
    name: str
    size: int | None = None
    etag: str | None = None
    modified: datetime | None = None
    #: Set by the listing for an entry it will not read (a link out of the source folder, a
    #: broken link): the file's outcome, (reason, detail), decided without reading it.
    rejected: tuple[Reason, str] | None = None

    @property
    def signature(self) -> str | None:
        """What the listing says about the bytes (size + ETag or mtime); ``None`` if unknown.

        Equal signatures let a re-run skip a file without downloading it.
        """
        marker = self.etag or (self.modified.isoformat() if self.modified else None)
        if self.size is None or marker is None:
            return None
        return f"{self.size}:{marker}"


@dataclass(frozen=True)
class Page:
    """Text of one PDF page (numbered from 1) or of a whole text file (number ``None``)."""

    number: int | None
    text: str
    #: The text was recognised from the page's image (it had no usable text layer).
    ocr: bool = False


@dataclass(frozen=True)
class Document:
    """A file's extracted text, page by page."""

    kind: DocumentKind
    pages: tuple[Page, ...]
    content_sha256: str
    encoding: str | None = None
    unreadable_pages: tuple[int, ...] = ()
    #: What the parser warned about while reading the file: how often, and the first few.
    warning_count: int = 0
    warnings: tuple[str, ...] = ()
    #: What the reader had to repair to decode a text file (e.g. a dangling byte dropped).
    repairs: tuple[str, ...] = ()
    #: PDF pages whose text layer was empty or nearly so (``ocr.needs_ocr``), OCR or not.
    textless_pages: int = 0
    #: Pages OCR could not read (number, why), and pages beyond INGEST_OCR_MAX_PAGES left alone.
    ocr_failed: tuple[tuple[int, str], ...] = ()
    ocr_capped: tuple[int, ...] = ()

    @property
    def ocr_pages(self) -> int:
        """Pages whose text came from OCR."""
        return sum(page.ocr for page in self.pages)

    def notes(self) -> tuple[str, ...]:
        """What a file's row should say about its extraction, besides its outcome."""
        notes = []
        if self.ocr_pages:
            notes.append(f"OCR on {self.ocr_pages} of {self.page_count} pages")
        if self.ocr_failed:
            number, why = self.ocr_failed[0]
            notes.append(f"OCR failed on page(s) {[n for n, _ in self.ocr_failed]} "
                         f"(page {number}: {why})")
        if self.ocr_capped:
            notes.append(f"OCR skipped {len(self.ocr_capped)} page(s) without text beyond the "
                         f"cap (INGEST_OCR_MAX_PAGES), from page {self.ocr_capped[0]}")
        notes.extend(self.repairs)
        if self.unreadable_pages:
            notes.append(f"text extraction failed on page(s) {list(self.unreadable_pages)}")
        if self.warning_count:
            first = self.warnings[0] if self.warnings else ""
            notes.append(f"{self.warning_count} parser warning{'s' if self.warning_count != 1 else ''}"
                         + (f", first: {first}" if first else ""))
        return tuple(notes)

    @property
    def page_count(self) -> int | None:
        """Pages in the PDF, readable or not; ``None`` for text files."""
        if self.kind is DocumentKind.TEXT:
            return None
        return len(self.pages) + len(self.unreadable_pages)


@dataclass(frozen=True)
class Chunk:
    """A piece of a document small enough to embed without truncation."""

    text: str
    chunk_index: int
    char_start: int
    char_end: int
    page_start: int | None
    page_end: int | None
    token_count: int
    #: Some of the chunk's text was recognised by OCR.
    ocr: bool = False
    #: The model tokenizer's ids of ``text`` (no special tokens; ``token_count`` of them), as the
    #: chunker counted them: the model reads these instead of tokenising the text again.
    token_ids: np.ndarray | None = field(default=None, compare=False, repr=False)


class FileOutcome(BaseModel):
    """Exactly one per file per run: what happened to it and why."""

    model_config = ConfigDict(frozen=True)

    source: str
    status: Status
    reason: Reason = Reason.OK
    detail: str = ""
    pages: int | None = None
    chunks: int = 0
    seconds: float = 0.0
    #: Pages whose text this run recognised by OCR.
    ocr_pages: int = 0

    @classmethod
    def rejected(cls, source: str, reason: Reason, detail: str, *, pages: int | None = None,
                 seconds: float = 0.0) -> FileOutcome:
        """Outcome of a file not indexed; ``skipped`` or ``failed`` follows from the reason."""
        status = Status.SKIPPED if reason in SKIP_REASONS else Status.FAILED
        return cls(source=source, status=status, reason=reason, detail=detail, pages=pages,
                   seconds=round(seconds, 3))


class RunTotals(BaseModel):
    """A run's counts. ``chunks`` adds up the rows' chunks (what the files hold in the
    collection after the run: an ``unchanged`` file counts what it already holds);
    ``chunks_embedded`` is what this run embedded, and ``chunks_per_second`` its rate."""

    model_config = ConfigDict(frozen=True)

    files: int = 0
    indexed: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    deleted: int = 0
    pages: int = 0
    #: Pages read by OCR in this run (of the indexed and updated files).
    ocr_pages: int = 0
    chunks: int = 0
    chunks_embedded: int = 0
    seconds: float = 0.0
    chunks_per_second: float = 0.0
    #: Seconds each stage spent, added up over its task runs (which overlap: the sum can
    #: exceed the run's wall time).
    seconds_by_stage: dict[str, float] = Field(default_factory=dict)


class PruneReport(BaseModel):
    """What ``--prune`` did: how many files it deleted, or why it refused to."""

    model_config = ConfigDict(frozen=True)

    deleted: int = 0
    indexed_files: int = 0
    refused: str | None = None


class RunSummary(BaseModel):
    """What a run returns and what the CLI prints: every file's outcome plus totals."""

    model_config = ConfigDict(frozen=True)

    run_id: str | None = None
    collection: str
    files: list[FileOutcome]
    totals: RunTotals
    prune: PruneReport | None = None
    #: Stopped by SIGTERM: in-flight files finished, later ones were not started.
    interrupted: bool = False
    #: The sources the run listed (rows show paths relative to them).
    sources: list[str] = Field(default_factory=list)
    #: How the run's vectors were computed: fp32, bf16 (torch autocast), fp32-openvino or
    #: bf16-openvino.
    embed_runtime: str | None = None
    #: Why that runtime: what INGEST_EMBED_PRECISION asked and what was measured or recorded.
    embed_choice: str | None = None
    #: Names results give some files (URI → name), e.g. the names they were uploaded under.
    names: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_outcomes(cls, outcomes: list[FileOutcome], *, collection: str, seconds: float,
                      run_id: str | None = None, prune: PruneReport | None = None,
                      interrupted: bool = False, sources: list[str] | None = None,
                      seconds_by_stage: dict[str, float] | None = None,
                      embed_runtime: str | None = None, embed_choice: str | None = None,
                      names: dict[str, str] | None = None) -> RunSummary:
        """Aggregate per-file outcomes (sorted by source for stable output)."""
        ordered = sorted(outcomes, key=lambda o: o.source)
        counts = {status: 0 for status in Status}
        for outcome in ordered:
            counts[outcome.status] += 1
        embedded = sum(o.chunks for o in ordered if o.status in (Status.INDEXED, Status.UPDATED))
        totals = RunTotals(
            files=len(ordered),
            indexed=counts[Status.INDEXED],
            updated=counts[Status.UPDATED],
            unchanged=counts[Status.UNCHANGED],
            skipped=counts[Status.SKIPPED],
            failed=counts[Status.FAILED],
            deleted=counts[Status.DELETED],
            pages=sum(o.pages or 0 for o in ordered),
            ocr_pages=sum(o.ocr_pages for o in ordered),
            chunks=sum(o.chunks for o in ordered),
            chunks_embedded=embedded,
            seconds=round(seconds, 3),
            chunks_per_second=round(embedded / seconds, 2) if seconds > 0 else 0.0,
            seconds_by_stage={k: round(v, 3) for k, v in (seconds_by_stage or {}).items()},
        )
        return cls(run_id=run_id, collection=collection, files=ordered, totals=totals, prune=prune,
                   interrupted=interrupted, sources=list(sources or []), embed_runtime=embed_runtime,
                   embed_choice=embed_choice, names=dict(names or {}))
