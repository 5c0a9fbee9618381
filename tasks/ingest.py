"""Thin Prefect tasks: retries, logging, and a call into ``tasks.core``."""

from __future__ import annotations

from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.tasks import exponential_backoff

from tasks.core.errors import TransientError
from tasks.core.models import FileOutcome, PruneReport, SourceFile
from tasks.core.process import (
    PreparedFile,
    commit_files,
    prepare_files,
    prepare_store,
    process_files,
    processor_for,
)
from tasks.core.prune import prune_missing
from tasks.core.settings import IngestParams, PipelineConfig
from tasks.core.store import FileHead, get_store

# Outcomes of files a task run has finished, kept across that run's retries so a retry redoes
# only the files that failed transiently. Entries live until the run's last attempt returns.
_finished: dict[UUID, dict[str, FileOutcome]] = {}


def retry_transient(task, task_run, state) -> bool:
    """Prefect retry condition: retry transient faults only, never permanent ones."""
    try:
        state.result()
    except TransientError:
        return True
    except Exception:
        return False
    return False


RETRY_OPTIONS = dict(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2),
                     retry_jitter_factor=0.5, retry_condition_fn=retry_transient)


@task(name="prepare-collection", cache_policy=NO_CACHE, **RETRY_OPTIONS)
def prepare_collection(config: PipelineConfig) -> int:
    """Load the model, validate chunking against it, create or check the collection."""
    dimension = prepare_store(config)
    get_run_logger().info("collection %r ready (%d-d, %s)", config.collection, dimension,
                          config.store.describe())
    return dimension


def _group_name() -> str:
    files = TaskRunContext.get().parameters["files"]
    return f"ingest-{files[0].name}" + (f"-+{len(files) - 1}" if len(files) > 1 else "")


def _with_retry_memo(step, *args):
    """Run a group ``step`` (process, prepare or commit) with this task run's memo of finished
    files, so a retry redoes only the files that failed transiently; the last attempt gives up."""
    context = TaskRunContext.get()
    run = context.task_run
    last_attempt = run.run_count > (context.task.retries or 0)
    finished = _finished.setdefault(run.id, {})
    try:
        results = step(*args, done=finished, give_up=last_attempt)
    except TransientError:
        raise  # retried: keep what this run finished
    except BaseException:
        _finished.pop(run.id, None)
        raise
    _finished.pop(run.id, None)
    return results


def _log_outcomes(outcomes: list[FileOutcome]) -> None:
    logger = get_run_logger()
    for outcome in outcomes:
        logger.info("%s: %s %s (%d chunks) %s", outcome.source, outcome.status.value,
                    outcome.reason.value, outcome.chunks, outcome.detail)


@task(name="ingest-files", task_run_name=_group_name, cache_policy=NO_CACHE, **RETRY_OPTIONS)
def ingest_files(files: list[SourceFile], config: PipelineConfig) -> list[FileOutcome]:
    """Read, chunk, embed and store a group of files; one outcome per file."""
    outcomes = _with_retry_memo(process_files, processor_for(config), files)
    _log_outcomes(outcomes)
    return outcomes


@task(name="lookup-heads", cache_policy=NO_CACHE, **RETRY_OPTIONS)
def lookup_heads(files: list[SourceFile], config: PipelineConfig) -> dict[str, FileHead]:
    """What the store holds for a group (runs where the store is, before ``embed_files``)."""
    return get_store(config.store).file_heads(config.collection, [f.uri for f in files])


@task(name="embed-files", task_run_name=_group_name, cache_policy=NO_CACHE, **RETRY_OPTIONS)
def embed_files(files: list[SourceFile], config: PipelineConfig,
                known: dict[str, FileHead]) -> list[PreparedFile]:
    """Read, chunk and embed a group of files without touching the store (Dask workers)."""
    return _with_retry_memo(prepare_files, processor_for(config), files, known)


@task(name="store-files", cache_policy=NO_CACHE, **RETRY_OPTIONS)
def store_files(prepared: list[PreparedFile], config: PipelineConfig) -> list[FileOutcome]:
    """Write embedded files where the store is; one outcome per file."""
    outcomes = _with_retry_memo(commit_files, processor_for(config), prepared)
    _log_outcomes(outcomes)
    return outcomes


@task(name="prune-missing", cache_policy=NO_CACHE, **RETRY_OPTIONS)
def prune_collection(config: PipelineConfig, params: IngestParams,
                     listed: set[str]) -> tuple[PruneReport, list[FileOutcome]]:
    """Delete files no longer in the sources (after a complete listing), within the guard."""
    report, outcomes = prune_missing(
        get_store(config.store), config.collection, listed=listed, sources=params.sources,
        include=params.include, max_fraction=params.prune_max_fraction, force=params.force_prune)
    logger = get_run_logger()
    if report.refused:
        logger.warning(report.refused)
    else:
        logger.info("pruned %d of %d indexed files", report.deleted, report.indexed_files)
    return report, outcomes


@task(name="maintain-store", cache_policy=NO_CACHE)
def maintain_store(config: PipelineConfig) -> str | None:
    """After a run that wrote points: let the store build its index if enough points wait."""
    done = get_store(config.store).maintain(config.collection)
    if done:
        get_run_logger().info("store maintenance: %s", done)
    return done
