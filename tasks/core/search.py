"""Semantic search over an ingested collection, with page-cited hits."""

from __future__ import annotations

from tasks.core.payload import Hit
from tasks.core.resources import Resources
from tasks.core.settings import PipelineConfig


def search(query: str, config: PipelineConfig, owner: Resources, *, limit: int = 5) -> list[Hit]:
    """Embed ``query`` with the collection's model and return the ``limit`` nearest chunks."""
    # fp32: a query is one short text; the runtime of the indexed vectors does not matter
    # beyond their cosine of ~0.99998 to fp32.
    embedder = owner.embedder(config.model)
    vector = embedder.embed([query], [len(query)], batch_size=1)[0]
    hits = owner.store(config.store).search(config.collection, vector.tolist(), limit=limit)
    return [Hit.from_payload(h.score, h.payload) for h in hits]
