"""Search over an ingested collection — hybrid (dense + BM25) by default — with page-cited hits."""

from __future__ import annotations

import logging

from tasks.core.errors import ConfigError
from tasks.core.payload import Hit
from tasks.core.resources import Resources
from tasks.core.settings import PipelineConfig
from tasks.core.sparse import SEARCH_MODES, Keywords, SearchMode
from tasks.core.store import VectorStore
from tasks.core.store.base import fusion_depth

log = logging.getLogger(__name__)

#: Hits asked of the store per hit returned: the candidates ``spread_over_pages`` orders.
OVERFETCH = 3


def search(query: str, config: PipelineConfig, owner: Resources, *, limit: int = 5,
           mode: SearchMode = "hybrid") -> list[Hit]:
    """The ``limit`` best chunks for ``query``, best first.

    ``hybrid`` (the default) asks the store for the nearest chunks by meaning (the dense
    vectors) and the best by keywords (BM25 of the words, and of their character 4-grams) and fuses
    the lists by reciprocal rank inside the engine: a question of rare names, codes or numbers
    that the embedding model blurs is still found, a compound by its parts, and a paraphrase
    without the document's words too. ``dense`` and ``sparse`` ask one side only.

    Hits cite different pages where they can (``spread_over_pages``). The candidates each side
    contributes to the fusion depend on ``limit`` alone (``fusion_depth``), not on how many
    hits are fetched to order.
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
    return best_hits(store, config.collection, dense=dense, sparse=sparse, limit=limit)


def best_hits(store: VectorStore, collection: str, *, dense: list[float] | None,
              sparse: Keywords | None, limit: int) -> list[Hit]:
    """The ``limit`` best hits of ``collection`` for these query vectors, spread over pages."""
    found = store.search(collection, dense=dense, sparse=sparse, limit=limit * OVERFETCH,
                         prefetch=fusion_depth(limit))
    return spread_over_pages([Hit.from_payload(h.score, h.payload) for h in found])[:limit]


def spread_over_pages(hits: list[Hit]) -> list[Hit]:
    """``hits`` (best first) reordered so that no page is cited a second time before every
    cited page has been cited once, nor a third time before every second citation, and so on;
    otherwise in their order.

    Neighbouring chunks overlap and a long page holds several: without this, a page that
    matches well takes several of the few places in the list with one citation. Measured on
    ``make eval`` (121 questions, hybrid): recall@5 0.983 -> 0.992, file+page@5 0.848 -> 0.864,
    no metric lower. A page's other hits are not dropped, only moved back: a collection of
    one short PDF still answers ``limit`` hits. Text files have no pages: each of their hits
    counts as a first citation.
    """
    times_cited: dict[tuple[str, str], int] = {}

    def citation(hit: Hit) -> int:  # 0 for a page's first hit, 1 for its second, ...
        if not hit.pages:
            return 0
        cited = (hit.source, hit.pages)  # the citation as shown: 'p. 3' or 'pp. 3-4'
        times_cited[cited] = times_cited.get(cited, 0) + 1
        return times_cited[cited] - 1

    rounds = [citation(hit) for hit in hits]
    return [hit for _, hit in sorted(zip(rounds, hits), key=lambda pair: pair[0])]  # stable sort


def _has_bm25(store: VectorStore, collection: str) -> bool:
    shape = store.shape(collection)
    return shape is None or shape.sparse  # a missing collection: the search says so
