"""The whole chain for a group of files in one call, without Prefect (tools, tests, bench)."""

from __future__ import annotations

from tasks.core.models import SourceFile
from tasks.core.resources import Resources
from tasks.core.settings import PipelineConfig
from tasks.core.stages.chunk import chunk
from tasks.core.stages.embed import embed
from tasks.core.stages.group import GroupResult
from tasks.core.stages.read import read
from tasks.core.stages.store import store


def run_chain(files: list[SourceFile], config: PipelineConfig, owner: Resources) -> GroupResult:
    """``read → chunk → embed → store`` for ``files``, no retries (transient faults become
    outcomes). ``config`` must come from ``prepare``."""
    vector_store = owner.store(config.store)
    group = read(files, config,
                 heads=lambda fs: vector_store.file_heads(config.collection, [f.uri for f in fs]),
                 parse_pdf=owner.parse_pdf(config), memo={}, give_up=True)
    group = chunk(group, owner.chunker(config), max_chunks=config.max_chunks)
    group = embed(group, owner.embedder_for(config), batch_size=config.embed_batch_size)
    return store(group, config, store=vector_store, keywords=owner.bm25().documents, memo={},
                 give_up=True)
