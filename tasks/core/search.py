"""Semantic search over an ingested collection, with page-cited hits."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.core.embedding import get_embedder
from tasks.core.settings import PipelineConfig
from tasks.core.store import get_store


@dataclass(frozen=True)
class Hit:
    score: float
    source: str
    file_name: str
    page_start: int | None
    page_end: int | None
    chunk_index: int
    text: str

    @property
    def pages(self) -> str:
        """'p. 3' or 'pp. 3-4' for PDFs, '' for text files."""
        if self.page_start is None:
            return ""
        if self.page_end in (None, self.page_start):
            return f"p. {self.page_start}"
        return f"pp. {self.page_start}-{self.page_end}"

    def snippet(self, width: int = 160) -> str:
        flat = " ".join(self.text.split())
        return flat if len(flat) <= width else flat[: width - 1].rstrip() + "…"


def search(query: str, config: PipelineConfig, *, limit: int = 5) -> list[Hit]:
    """Embed ``query`` with the collection's model and return the ``limit`` nearest chunks."""
    embedder = get_embedder(config.model)
    vector = embedder.embed([query], [len(query)], batch_size=1)[0]
    hits = get_store(config.store).search(config.collection, vector.tolist(), limit=limit)
    return [Hit(score=round(h.score, 4), source=h.payload.get("source", ""),
                file_name=h.payload.get("file_name", ""), page_start=h.payload.get("page_start"),
                page_end=h.payload.get("page_end"), chunk_index=h.payload.get("chunk_index", -1),
                text=h.payload.get("text", "")) for h in hits]
