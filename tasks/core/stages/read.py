"""The ``read`` stage: what is already stored, then each new or changed file's text.

For a group of listed files: look up their head points in one store request; a file whose
listing signature and settings match its head is ``unchanged`` **without being downloaded**;
the others are fetched (within the size limit), sniffed by content, and parsed — PDFs in the
isolated parse pool, text files decoded in whatever encoding they use. A file whose bytes hash
like its head's is ``unchanged`` too (a touched file), with its new signature to record.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from tasks.core.errors import FileRejected, TransientError
from tasks.core.models import Document, FileOutcome, Reason, SourceFile, Status
from tasks.core.payload import FileHead
from tasks.core.readers import HEAD_BYTES, TEXT_SUFFIXES, read_document, sniff_kind
from tasks.core.settings import PipelineConfig
from tasks.core.sources import read_bytes
from tasks.core.stages.group import Group, Settled, each_file, gave_up, settle_rejection

STAGE = "read"

HeadLookup = Callable[[list[SourceFile]], dict[str, FileHead]]


@dataclass(frozen=True)
class ReadFile:
    """A file's text, read and parsed. ``replaces``: an earlier version is indexed (the file
    will be ``updated``, not ``indexed``)."""

    file: SourceFile
    document: Document
    replaces: bool
    seconds: float


def read(files: list[SourceFile], config: PipelineConfig, *, heads: HeadLookup,
         parse_pdf: Callable[..., Document], memo: MutableMapping[str, ReadFile | Settled],
         give_up: bool) -> Group[ReadFile]:
    """Read a group of files; raises only ``TransientError`` (a retry redoes only the files
    that hit one: ``memo`` keeps the others). ``heads`` looks up what the store holds."""
    started = time.perf_counter()
    pending = [f for f in files if f.uri not in memo]
    try:
        known = heads(pending) if pending else {}
    except TransientError as exc:
        known, lookup_failed = {}, exc
    else:
        lookup_failed = None

    def step(file: SourceFile) -> ReadFile | Settled:
        if lookup_failed is not None:
            raise lookup_failed
        return settle_rejection(file.uri, time.perf_counter(),
                                lambda: read_file(file, known.get(file.uri), config, parse_pdf))

    results = each_file(files, lambda f: f.uri, step, memo=memo, give_up=give_up,
                        on_give_up=lambda uri, exc: Settled(gave_up(uri, exc)))
    return Group(sources=tuple(f.uri for f in files)).then(
        STAGE, time.perf_counter() - started,
        files=[r for r in results if isinstance(r, ReadFile)],
        settled=[r for r in results if isinstance(r, Settled)])


def read_file(file: SourceFile, head: FileHead | None, config: PipelineConfig,
              parse_pdf: Callable[..., Document]) -> ReadFile | Settled:
    """One file: ``unchanged`` from its head if possible, else its bytes parsed."""
    started = time.perf_counter()
    if file.rejected is not None:
        raise FileRejected(*file.rejected)
    # A head from a finished write with today's settings is what "already indexed" means.
    current = (head if head is not None and head.complete and not config.overwrite
               and head.config_fingerprint == config.fingerprint
               and head.ocr_key == ocr_key(head, config) else None)
    if current is not None and file.signature is not None and current.signature == file.signature:
        return Settled(_unchanged(file, current, started))  # no download needed
    data = fetch(file, config.max_file_bytes)
    if current is not None and current.content_sha256 == hashlib.sha256(data).hexdigest():
        # Same bytes under a new signature (touched, re-uploaded): remember the new one.
        return Settled(_unchanged(file, current, started), signature=file.signature)
    document = read_document(data, file.name, max_pages=config.max_pages,
                             max_chars=config.max_text_chars, ocr=config.ocr, parse_pdf=parse_pdf)
    return ReadFile(file=file, document=document, replaces=head is not None,
                    seconds=time.perf_counter() - started)


def ocr_key(head: FileHead, config: PipelineConfig) -> str:
    """The OCR key a file's points must record to be current: OCR's settings matter to a PDF
    that has pages without a text layer (or to every PDF, in ``force`` mode), to nothing else.
    A PDF indexed before OCR existed (pages without a layer not counted) counts as having none:
    ``--overwrite`` reads such files again."""
    if head.page_count is None:
        return ""
    return config.ocr.key(head.textless_pages or 0)


def fetch(file: SourceFile, limit: int) -> bytes:
    """The file's bytes, refusing files over ``limit``; a name that is neither PDF nor text is
    only downloaded whole when its first bytes say PDF."""
    if file.size is not None and file.size > limit:
        raise FileRejected(Reason.TOO_LARGE, f"{file.size} bytes, over the limit of {limit}")
    if PurePosixPath(file.name).suffix.lower() not in TEXT_SUFFIXES | {".pdf"}:
        # sniff_kind raises unsupported_type (naming what the content is) for anything else.
        sniff_kind(read_bytes(file, limit=HEAD_BYTES), file.name)
    data = read_bytes(file, limit=limit + 1)
    if len(data) > limit:
        raise FileRejected(Reason.TOO_LARGE, f"over the limit of {limit} bytes")
    return data


def _unchanged(file: SourceFile, head: FileHead, started: float) -> FileOutcome:
    return FileOutcome(source=file.uri, status=Status.UNCHANGED, reason=Reason.UNCHANGED,
                       detail="already indexed with the same content and settings",
                       chunks=head.chunk_count, pages=head.page_count,
                       seconds=round(time.perf_counter() - started, 3))
