"""The ``embed`` stage: every chunk of a group in one model call.

One call for the group lets the batches be planned over every file's chunks (by token count):
a file's own few chunks of uneven length would waste ~20% of the model's work on padding. If
the joint call fails, each file is embedded alone, so the one file that breaks the model gets
the error and the others still get vectors. (The chunks' BM25 vectors are made by the
``store`` stage, where they are written: see ``tasks.core.stages.store.points``.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tasks.core.embedding import Embedder
from tasks.core.models import FileOutcome, Reason
from tasks.core.stages.chunk import ChunkedFile
from tasks.core.stages.group import Group, Settled

STAGE = "embed"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedFile:
    """A chunked file with one normalised dense vector per chunk;
    ``seconds`` include its share of the group's model call."""

    chunked: ChunkedFile
    vectors: np.ndarray
    seconds: float


def embed(group: Group[ChunkedFile], embedder: Embedder, *, batch_size: int) -> Group[EmbeddedFile]:
    """Embed the group's chunks together; a file the model cannot take fails alone.

    The stage's seconds are the model's working time: groups take turns on the model, and the
    wait for another group's call is not this stage's work.
    """
    embedded, settled, worked = [], [], 0.0
    for item, vectors, seconds in _embed_together(list(group.files), embedder, batch_size):
        worked += seconds
        if isinstance(vectors, Exception):
            settled.append(Settled(FileOutcome.rejected(
                item.file.uri, Reason.ERROR, f"embedding failed: {type(vectors).__name__}: {vectors}",
                pages=item.page_count, seconds=item.seconds + seconds)))
        else:
            embedded.append(EmbeddedFile(chunked=item, vectors=vectors, seconds=item.seconds + seconds))
    return group.then(STAGE, worked, files=embedded, settled=settled)


def _embed_together(items: list[ChunkedFile], embedder: Embedder, batch_size: int
                    ) -> Iterator[tuple[ChunkedFile, np.ndarray | Exception, float]]:
    """(item, its vectors or the error that stopped them, its share of the model's seconds)."""
    if not items:
        return
    chunks = [c for item in items for c in item.chunks]
    started = time.perf_counter()
    try:
        vectors, seconds = embedder.embed_timed(
            [c.text for c in chunks], [c.token_count for c in chunks], batch_size=batch_size,
            token_ids=[c.token_ids for c in chunks])
    except Exception as exc:
        if len(items) == 1:
            yield items[0], exc, time.perf_counter() - started
            return
        log.warning("embedding %d files together failed; embedding them one by one", len(items))
        for item in items:
            yield from _embed_together([item], embedder, batch_size)
        return
    total, offset = max(1, len(chunks)), 0
    for item in items:
        yield item, vectors[offset:offset + len(item.chunks)], seconds * len(item.chunks) / total
        offset += len(item.chunks)
