"""The ``store`` stage: each embedded file's points written with the crash-safe protocol.

Runs where the store is (the flow's process for an embedded store). A write that hits a
transient store fault is retried by re-running this stage only: ``memo`` keeps the files
already written, and nothing is read or embedded again.

Each chunk's BM25 vectors (words and 4-grams, ``tasks.core.sparse``; ~0.2 ms a chunk) are made
here, file by file as it is written, not in ``embed``: a task's inputs are walked object by
object by Prefect (``visit_collection``, which keeps an entry for every object it meets), and
~270 term hashes and weights a chunk crossing from ``embed`` to ``store`` cost a 3,174-chunk
group ~220 MB of peak memory and seconds of CPU.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from datetime import datetime, timezone

from tasks.core.errors import StoreError
from tasks.core.ids import point_id
from tasks.core.models import FileOutcome, Reason, Status
from tasks.core.payload import PointPayload
from tasks.core.settings import PipelineConfig
from tasks.core.sparse import SparseEncode
from tasks.core.stages.embed import EmbeddedFile
from tasks.core.stages.group import Group, GroupResult, Settled, each_file, gave_up, with_seconds
from tasks.core.store import StoredPoint, VectorStore

STAGE = "store"


def store(group: Group[EmbeddedFile], config: PipelineConfig, *, store: VectorStore,
          keywords: SparseEncode, memo: MutableMapping[str, FileOutcome], give_up: bool) -> GroupResult:
    """Write the group (``keywords``: the chunks' BM25 vectors); one outcome per listed file, in
    listing order. Raises only ``TransientError`` (for the files not yet written; the rest are
    in ``memo``)."""
    started = time.perf_counter()
    pending = {item.chunked.file.uri: item for item in group.files}
    pending.update({s.outcome.source: s for s in group.settled})
    # Every file of the group has exactly one record by now: in the chain or settled.
    ordered = [pending[uri] for uri in group.sources]

    def step(item: EmbeddedFile | Settled) -> FileOutcome:
        if isinstance(item, Settled):
            return _record_settled(item, config, store)
        return write_file(item, config, store, keywords)

    outcomes = each_file(ordered, _uri, step, memo=memo, give_up=give_up, on_give_up=gave_up)
    seconds = group.then(STAGE, time.perf_counter() - started, files=()).seconds
    return GroupResult(outcomes=tuple(outcomes), seconds=seconds)


def _uri(item: EmbeddedFile | Settled) -> str:
    return item.outcome.source if isinstance(item, Settled) else item.chunked.file.uri


def _record_settled(item: Settled, config: PipelineConfig, store: VectorStore) -> FileOutcome:
    """A settled file needs no points; an unchanged one may have a new signature to record."""
    if item.signature is None:
        return item.outcome
    started = time.perf_counter()
    store.update_signature(config.collection, item.outcome.source, item.signature)
    return with_seconds(item.outcome, time.perf_counter() - started)


def write_file(item: EmbeddedFile, config: PipelineConfig, store: VectorStore,
               keywords: SparseEncode) -> FileOutcome:
    """Replace the file's points; its outcome (``indexed`` or ``updated``)."""
    chunked = item.chunked
    started = time.perf_counter()
    try:
        store.replace_file_points(config.collection, chunked.file.uri, points(item, config, keywords),
                                  batch_size=config.upsert_batch)
    except StoreError as exc:  # refused for good (not transient): this file fails, not the run
        return FileOutcome.rejected(chunked.file.uri, Reason.ERROR, f"store refused the write: {exc}",
                                    pages=chunked.page_count,
                                    seconds=item.seconds + time.perf_counter() - started)
    detail = "; ".join(chunked.notes)
    return FileOutcome(source=chunked.file.uri,
                       status=Status.UPDATED if chunked.replaces else Status.INDEXED,
                       detail=detail, pages=chunked.page_count, chunks=len(chunked.chunks),
                       ocr_pages=chunked.ocr_pages,
                       seconds=round(item.seconds + time.perf_counter() - started, 3))


def points(item: EmbeddedFile, config: PipelineConfig, keywords: SparseEncode) -> list[StoredPoint]:
    """The file's points: one per chunk (dense and keyword vectors), IDs ``uuid5(source, chunk index)``."""
    chunked, file = item.chunked, item.chunked.file
    precision, _, backend = (config.embed_runtime or "fp32").partition("-")
    ingested_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    ocr_key = config.ocr.key(chunked.textless_pages or 0) if chunked.page_count is not None else ""
    return [StoredPoint(
        id=point_id(file.uri, chunk.chunk_index), vector=vector.tolist(), sparse=sparse,
        payload=PointPayload(
            text=chunk.text, chunk_index=chunk.chunk_index, page_start=chunk.page_start,
            page_end=chunk.page_end, char_start=chunk.char_start, char_end=chunk.char_end,
            token_count=chunk.token_count, ocr=chunk.ocr, source=file.uri, file_name=file.name,
            content_sha256=chunked.content_sha256, config_fingerprint=config.fingerprint,
            chunk_count=len(chunked.chunks), page_count=chunked.page_count,
            source_signature=file.signature, ocr_key=ocr_key,
            textless_pages=chunked.textless_pages, model=config.model, embed_precision=precision,
            embed_backend=backend or "torch", ingested_at=ingested_at).to_dict())
        for chunk, vector, sparse in zip(chunked.chunks, item.vectors,
                                         keywords([c.text for c in chunked.chunks]))]
