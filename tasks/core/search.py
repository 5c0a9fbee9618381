"""Search over an ingested collection — hybrid (dense + BM25) by default — with page-cited hits."""

from __future__ import annotations

import logging

from tasks.core.errors import ConfigError
from tasks.core.payload import Hit
from tasks.core.resources import Resources
from tasks.core.settings import PipelineConfig
from tasks.core.sparse import SEARCH_MODES, SearchMode
from tasks.core.store import VectorStore

log = logging.getLogger(__name__)


def search(query: str, config: PipelineConfig, owner: Resources, *, limit: int = 5,
           mode: SearchMode = "hybrid") -> list[Hit]:
    """The ``limit`` best chunks for ``query``, best first.

    ``hybrid`` (the default) asks the store for the nearest chunks by meaning (the dense
    vectors) and the best by keywords (BM25 of the words, and of their character 4-grams) and fuses
    the lists by reciprocal rank inside the engine: a question of rare names, codes or numbers
    that the embedding model blurs is still found, a compound by its parts, and a paraphrase
    without the document's words too. ``dense`` and ``sparse`` ask one side only.
    """
    if mode not in SEARCH_MODES:
        raise ConfigError(f"unknown search mode {mode!r}; choose one of {', '.join(SEARCH_MODES)}")
    dense = sparse = None
    if mode != "sparse":
        # fp32: a query is one short text; the runtime of the indexed vectors does not matter
        # beyond their cosine of ~0.99998 to fp32. A cold process embeds it without torch.
        dense = owner.query_embedder(config.model).embed_query(query).tolist()
    store = owner.store(config.store)
    if mode == "hybrid" and not _has_bm25(store, config.collection):
        log.warning("collection %r has no BM25 vectors yet (built before hybrid search): searching "
                    "by meaning only; any 'ingest run' into it adds them", config.collection)
        mode = "dense"
    if mode != "dense":
        sparse = owner.bm25().query(query)
    hits = store.search(config.collection, dense=dense, sparse=sparse, limit=limit)
    return [Hit.from_payload(h.score, h.payload) for h in hits]


def _has_bm25(store: VectorStore, collection: str) -> bool:
    shape = store.shape(collection)
    return shape is None or shape.sparse  # a missing collection: the search says so
