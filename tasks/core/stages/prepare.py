"""``prepare``: before any file, the collection made ready and the embedding runtime chosen."""

from __future__ import annotations

import logging

from tasks.core.resources import Resources
from tasks.core.settings import PipelineConfig

log = logging.getLogger(__name__)


def prepare(config: PipelineConfig, owner: Resources) -> PipelineConfig:
    """Validate the config against the model, create or check the collection, and choose the
    embedding runtime once for the run; returns the config with that runtime.

    The store is checked first (an embedded store in use says so before the model loads).
    With ``overwrite``, a collection whose vectors do not fit the model is dropped and recreated;
    otherwise that is a ``CollectionMismatchError``, raised before anything is written. A
    collection built before hybrid search gets its BM25 vectors here, from its payload text.
    """
    store = owner.store(config.store)
    store.collection_dimension(config.collection)
    owner.chunker(config)  # refuses a chunk size the model cannot read whole
    runtime = config.embed_runtime or owner.runtime_for(config.model, config.embed_precision)
    embedder = owner.embedder(config.model, runtime)
    done = store.ensure_collection(config.collection, embedder.dimension, encode=owner.bm25().documents,
                                   recreate_on_mismatch=config.overwrite)
    if done:
        log.info("collection %r: %s", config.collection, done)
    return config.with_runtime(runtime)
