"""``prepare``: before any file, the collection made ready and the embedding runtime chosen."""

from __future__ import annotations

import logging

from tasks.core.ids import vectors_label
from tasks.core.precision import RuntimeChoice, unavailable_reason
from tasks.core.resources import Resources
from tasks.core.settings import PipelineConfig

log = logging.getLogger(__name__)


def prepare(config: PipelineConfig, owner: Resources) -> PipelineConfig:
    """Validate the config against the model, create or check the collection, and choose the
    embedding runtime once for the run; returns the config with that runtime.

    The store is checked first (an embedded store in use says so before the model loads).
    With ``overwrite``, a collection whose vectors do not fit the model is dropped and recreated;
    otherwise that is a ``CollectionMismatchError``, raised before anything is written. A
    collection built before hybrid search (or before the 4-gram vectors) gets the keyword vectors it
lacks here, from its payload text.
    """
    store = owner.store(config.store)
    store.collection_dimension(config.collection)
    owner.chunker(config)  # refuses a chunk size the model cannot read whole
    choice = config_runtime(config, owner)
    embedder = owner.embedder(config.model, choice.runtime)
    done = store.ensure_collection(config.collection, embedder.dimension, encode=owner.bm25().documents,
                                   recreate_on_mismatch=config.overwrite)
    if done:
        log.info("collection %r: %s", config.collection, done)
    # The model is loaded: keep what later processes' searches need to embed a query without
    # torch (once per model and install).
    owner.keep_query_encoder(config.model)
    return config.with_runtime(choice)


def config_runtime(config: PipelineConfig, owner: Resources) -> RuntimeChoice:
    """The run's embedding runtime. ``INGEST_EMBED_PRECISION=auto`` keeps the vectors an
    existing collection was built with — a changed default or a faster machine never re-embeds
    a whole collection by itself: fp32 vectors, made on torch or OpenVINO, are made by the
    faster of the two here (``ids.vectors_label``); others by the runtime that made them —
    unless this process cannot run it or the run re-embeds everything anyway (``overwrite``);
    an explicit ``fp32`` or ``bf16`` is a choice to switch: files re-embed as their fingerprint
    changes."""
    if config.embed_runtime is not None:
        return RuntimeChoice(config.embed_runtime, config.embed_choice or "chosen by the caller")
    if config.embed_precision == "auto" and not config.overwrite:
        recorded = owner.store(config.store).recorded_runtime(config.collection)
        if recorded is not None and vectors_label(recorded) == "fp32":
            return owner.runtime_choice(config.model, "auto", vectors="fp32")
        if recorded is not None:
            reason = unavailable_reason(recorded, owner.model(config.model).model)
            if reason is None:
                choice = RuntimeChoice(recorded, f"INGEST_EMBED_PRECISION=auto: collection "
                                                 f"{config.collection!r} was built with it")
                log.info("embedding with %s", choice)
                return choice
            log.warning("collection %r was built with %s, which this process cannot run (%s): "
                        "choosing again; its files will be re-embedded", config.collection,
                        recorded, reason)
    return owner.runtime_choice(config.model, config.embed_precision)
