"""Thin Prefect tasks: one per stage, each a retry policy, a log line and one call into
``tasks.core``.

    prepare → (per group of files) read → chunk → embed → store → … → prune → maintain

The stages are chained by data: each takes the previous one's result, so Prefect records the
edge (the run graph draws ``read → chunk → embed → store`` for every group) and a retry re-runs
one stage only. ``retry_policy`` states each stage's retries, once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.tasks import exponential_backoff

from tasks.core.errors import TransientError
from tasks.core.models import FileOutcome, PruneReport, SourceFile
from tasks.core.payload import FileHead
from tasks.core.prune import prune_missing
from tasks.core.resources import resources
from tasks.core.rows import outcome_line
from tasks.core.settings import IngestParams, IngestSettings, PipelineConfig
from tasks.core.sources import display_name
from tasks.core.stages import chunk as chunk_stage
from tasks.core.stages import embed as embed_stage
from tasks.core.stages import prepare as prepare_stage
from tasks.core.stages import read as read_stage
from tasks.core.stages import store as store_stage
from tasks.core.stages.chunk import ChunkedFile
from tasks.core.stages.embed import EmbeddedFile
from tasks.core.stages.group import Group, GroupResult, group_label
from tasks.core.stages.read import ReadFile


def retry_transient(task, task_run, state) -> bool:
    """Prefect retry condition: retry transient faults only, never permanent ones."""
    try:
        state.result()
    except TransientError:
        return True
    except Exception:
        return False
    return False


def retry_policy(stage: str, settings: IngestSettings) -> dict:
    """Each stage's retries, stated once: ``read`` retries transient source faults, ``store``
    (and the collection check, prune and head lookups) transient store faults; ``chunk`` is
    deterministic and never retried; ``embed`` is retried at most once (a model call that
    failed for the whole group; a file the model cannot take already fails alone)."""
    delay = (exponential_backoff(backoff_factor=settings.retry_backoff_s)
             if settings.retry_backoff_s > 0 else 0)
    transient = {"retries": settings.retries, "retry_delay_seconds": delay,
                 "retry_jitter_factor": 0.5 if settings.retry_backoff_s > 0 else None,
                 "retry_condition_fn": retry_transient}
    if stage == "chunk":
        return {"retries": 0}
    if stage == "embed":
        return {"retries": min(1, settings.retries), "retry_delay_seconds": 0}
    if stage == "maintain":
        return {"retries": 0}
    return transient


def _group_name(verb: str):
    """A task run name from the group it works on: ``embed 24 files: a.pdf, b.txt …``."""
    def name(parameters: dict) -> str:  # called with the resolved parameters
        for value in parameters.values():
            if isinstance(value, Group):
                return group_label(verb, value.names())
            if isinstance(value, list):
                return group_label(verb, [f.name for f in value])
        return verb
    return name


@contextlib.contextmanager
def _retry_memo() -> Iterator[tuple[dict, bool]]:
    """This task run's memo of finished files, kept across its retries, and whether this is
    its last attempt (then transient faults become outcomes instead of a retry)."""
    context = TaskRunContext.get()
    last = context.task_run.run_count > (context.task.retries or 0)
    with resources().retry_memo(context.task_run.id, last_attempt=last) as memo:
        yield memo, last


@task(name="prepare", task_run_name="prepare", cache_policy=NO_CACHE)
def prepare(config: PipelineConfig) -> PipelineConfig:
    """Load the model, validate chunking against it, create or check the collection, and
    choose the embedding runtime for the run."""
    ready = prepare_stage.prepare(config, resources())
    get_run_logger().info("collection %r ready (%s); embedding with %s (%s)", config.collection,
                          config.store.describe(), ready.embed_runtime, ready.embed_choice)
    return ready


@task(name="lookup", task_run_name=_group_name("lookup"), cache_policy=NO_CACHE)
def lookup(files: list[SourceFile], config: PipelineConfig) -> dict[str, FileHead]:
    """What the store holds for a group, where the store is (for a ``read`` that runs away
    from an embedded store, on Dask)."""
    return resources().store(config.store).file_heads(config.collection, [f.uri for f in files])


@task(name="read", task_run_name=_group_name("read"), cache_policy=NO_CACHE)
def read(files: list[SourceFile], config: PipelineConfig,
         known: dict[str, FileHead] | None = None) -> Group[ReadFile]:
    """Skip unchanged files without downloading them; fetch, sniff and parse the others."""
    owner = resources()
    if known is None:
        store = owner.store(config.store)
        heads = lambda fs: store.file_heads(config.collection, [f.uri for f in fs])  # noqa: E731
    else:
        heads = lambda fs: known  # noqa: E731
    with _retry_memo() as (memo, last):
        group = read_stage.read(files, config, heads=heads, parse_pdf=owner.parse_pdf(config),
                                memo=memo, give_up=last)
    get_run_logger().info("%d to chunk, %d settled", len(group.files), len(group.settled))
    return group


@task(name="chunk", task_run_name=_group_name("chunk"), cache_policy=NO_CACHE)
def chunk(read: Group[ReadFile], config: PipelineConfig) -> Group[ChunkedFile]:
    """Cut each file's text into token-aware chunks."""
    chunker = resources().chunker(config)
    group = chunk_stage.chunk(read, chunker, max_chunks=config.max_chunks)
    get_run_logger().info("%d chunks from %d files", sum(len(f.chunks) for f in group.files),
                          len(group.files))
    return group


@task(name="embed", task_run_name=_group_name("embed"), cache_policy=NO_CACHE)
def embed(chunked: Group[ChunkedFile], config: PipelineConfig) -> Group[EmbeddedFile]:
    """Embed every chunk of the group in one model call."""
    owner = resources()
    embedder = owner.embedder_for(config)
    group = embed_stage.embed(chunked, embedder, batch_size=config.embed_batch_size)
    get_run_logger().info("%d chunks embedded (%s)", sum(len(f.vectors) for f in group.files),
                          embedder.label)
    return group


@task(name="store", task_run_name=_group_name("store"), cache_policy=NO_CACHE)
def store(embedded: Group[EmbeddedFile], config: PipelineConfig) -> GroupResult:
    """Write each file's points (crash-safe); one outcome per file of the group."""
    owner = resources()
    with _retry_memo() as (memo, last):
        result = store_stage.store(embedded, config, store=owner.store(config.store),
                                   keywords=owner.bm25().documents, memo=memo, give_up=last)
    logger = get_run_logger()
    for outcome in result.outcomes:
        logger.info("%s", outcome_line(outcome, display_name(outcome.source)))
    return result


@task(name="prune", task_run_name="prune", cache_policy=NO_CACHE)
def prune(config: PipelineConfig, params: IngestParams,
          listed: set[str]) -> tuple[PruneReport, list[FileOutcome]]:
    """Delete files no longer in the sources (after a complete listing), within the guard."""
    report, outcomes = prune_missing(
        resources().store(config.store), config.collection, listed=listed, sources=params.sources,
        include=params.include, max_fraction=params.prune_max_fraction, force=params.force_prune)
    logger = get_run_logger()
    if report.refused:
        logger.warning(report.refused)
    else:
        logger.info("pruned %d of %d indexed files", report.deleted, report.indexed_files)
    return report, outcomes


@task(name="maintain", task_run_name="maintain", cache_policy=NO_CACHE)
def maintain(config: PipelineConfig) -> str | None:
    """After a run that wrote points: let the store build its index if enough points wait."""
    done = resources().store(config.store).maintain(config.collection)
    if done:
        get_run_logger().info("store maintenance: %s", done)
    return done
