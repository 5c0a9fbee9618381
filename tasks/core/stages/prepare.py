"""``prepare``: before any file, the collection made ready and the embedding runtime chosen."""

from __future__ import annotations

from tasks.core.resources import Resources
from tasks.core.settings import PipelineConfig


def prepare(config: PipelineConfig, owner: Resources) -> PipelineConfig:
    """Validate the config against the model, create or check the collection, and choose the
    embedding runtime once for the run; returns the config with that runtime.

    The store is checked first (an embedded store in use says so before the model loads).
    With ``overwrite``, a collection whose vectors do not fit the model is dropped and recreated;
    otherwise that is a ``CollectionMismatchError``, raised before anything is written.
    """
    store = owner.store(config.store)
    store.collection_dimension(config.collection)
    owner.chunker(config)  # refuses a chunk size the model cannot read whole
    runtime = config.embed_runtime or owner.runtime_for(config.model, config.embed_precision)
    embedder = owner.embedder(config.model, runtime)
    store.ensure_collection(config.collection, embedder.dimension,
                            recreate_on_mismatch=config.overwrite)
    return config.with_runtime(runtime)
