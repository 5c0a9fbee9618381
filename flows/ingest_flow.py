"""The ingest flow: list the sources, map ``read → chunk → embed → store`` over groups of
files, prune, report.

Files travel in groups of ``INGEST_FILES_PER_TASK`` files and at most ``INGEST_GROUP_MB`` of
them: Prefect records every task run on its server (~20–35 ms each), so a chain per file would
cost more than the work on large batches, while each group's chunks embedded together waste
less of the model on padding; the byte bound keeps what a group holds in memory bounded. The
first groups are smaller (2 files, doubling), so the model starts at once. Every file still gets
its own outcome.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections import deque
from collections.abc import Iterator

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.exceptions import TerminationSignal
from prefect.runtime import flow_run
from prefect.states import Failed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import ValidationError

from flows.progress import RunProgress
from flows.report import publish_summary
from flows.runners import dask_runner
from tasks import stages
from tasks.core.heap import limit_malloc_arenas
from tasks.core.models import FileOutcome, Reason, RunSummary, SourceFile, Status
from tasks.core.resources import resources
from tasks.core.settings import (
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_CHUNK_TOKENS,
    DEFAULT_COLLECTION,
    ChunkOverlap,
    ChunkTokens,
    CollectionName,
    ForcePrune,
    IncludeGlobs,
    IngestParams,
    IngestSettings,
    Overwrite,
    PipelineConfig,
    Prune,
    PruneMaxFraction,
    SourceNames,
    Sources,
    validation_message,
)
from tasks.core.sources import discover_files
from tasks.core.stages.group import FIRST_GROUP_FILES, GroupResult, group_files
from tasks.core.store import exclusive_run

#: The stages a group of files goes through, each its own task run.
CHAIN = ("read", "chunk", "embed", "store")


def _parameters_documented(fn):
    """Append an ``Args:`` section built from ``IngestParams``' field descriptions: Prefect
    reads a flow's parameter descriptions from its docstring (the UI's run form shows them),
    and the descriptions are stated once, on the parameter types."""
    args = [f"    {name}: {field.description}" for name, field in IngestParams.model_fields.items()]
    fn.__doc__ = f"{fn.__doc__}\n\nArgs:\n" + "\n".join(args)
    return fn


@flow(name="ingest-documents", validate_parameters=True)
@_parameters_documented
def ingest_documents(
    sources: Sources,
    include: IncludeGlobs = [],  # noqa: B006 (validated and copied by Prefect; never mutated)
    collection: CollectionName = DEFAULT_COLLECTION,
    chunk_tokens: ChunkTokens = DEFAULT_CHUNK_TOKENS,
    chunk_overlap: ChunkOverlap = DEFAULT_CHUNK_OVERLAP,
    overwrite: Overwrite = False,
    prune: Prune = False,
    prune_max_fraction: PruneMaxFraction = 0.5,
    force_prune: ForcePrune = False,
    names: SourceNames = {},  # noqa: B006 (as above)
) -> RunSummary:
    """Ingest every PDF and text file of the sources into the vector store; one outcome per
    file, a table and a totals artifact."""
    started = time.perf_counter()
    limit_malloc_arenas()  # a worker's flow process (``ingest`` commands did it at their start)
    try:
        params = IngestParams(sources=sources, include=include, collection=collection,
                              chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap,
                              overwrite=overwrite, prune=prune or force_prune,
                              prune_max_fraction=prune_max_fraction, force_prune=force_prune,
                              names=names)
    except ValidationError as exc:  # a combination no single field's bounds catch
        return Failed(message=validation_message(exc))
    settings = IngestSettings()
    config = PipelineConfig.build(settings, params)
    logger = get_run_logger()
    shown = ", ".join(params.sources[:3]) + (f" and {len(params.sources) - 3} more"
                                             if len(params.sources) > 3 else "")
    logger.info("ingesting %s into %r (%s)", shown, config.collection, config.store.describe())
    owner = resources()
    with exclusive_run(config.store, wait_s=settings.store_wait_s,
                       on_wait=lambda: logger.info("another run holds the embedded store; waiting"),
                       on_release=lambda: owner.close_store(config.store)):
        summary = _ingest(params, settings, config, started)
    t = summary.totals
    logger.info("%d files: %d indexed, %d updated, %d unchanged, %d skipped, %d failed, %d deleted; "
                "%d chunks embedded in %.1fs", t.files, t.indexed, t.updated, t.unchanged, t.skipped,
                t.failed, t.deleted, t.chunks_embedded, t.seconds)
    return summary


@contextlib.contextmanager
def placement(settings: IngestSettings) -> Iterator[tuple[TaskRunner, TaskRunner, int]]:
    """Where the stages run: (``compute`` for read, chunk and embed; ``local`` for store, in
    this process, where an embedded store is; groups in flight at once).

    Threads in this process by default; with a Dask task runner (the flow's, given by
    ``with_options``, or from ``INGEST_DASK_*``), ``compute`` is the cluster. A group's waiting
    stages hold a thread each, so the local pool has a thread per stage per group in progress.
    """
    # ``workers`` groups in progress (at least 2): one on the model while the next ones are
    # read and chunked ahead; more would only hold more documents in memory.
    in_progress = max(2, settings.workers)
    with ThreadPoolTaskRunner(max_workers=len(CHAIN) * in_progress) as local:
        context = FlowRunContext.get()
        given = context.task_runner if context else None
        dask = given if given is not None and not isinstance(given, ThreadPoolTaskRunner) else None
        with contextlib.ExitStack() as stack:
            if dask is None and (dask := dask_runner(settings.dask_address,
                                                     settings.dask_workers)) is not None:
                stack.enter_context(dask)
            if dask is None:
                yield local, local, in_progress
                return
            workers = len(dask.client.scheduler_info()["workers"])
            get_run_logger().info("reading and embedding on %d Dask worker(s) at %s", workers,
                                  dask.client.scheduler.address)
            yield dask, local, max(2, workers * 2)


def _ingest(params: IngestParams, settings: IngestSettings, config: PipelineConfig,
            started: float) -> RunSummary:
    def task(name: str):
        return getattr(stages, name).with_options(**stages.retry_policy(name, settings))

    stage_seconds: dict[str, float] = {}

    def timed(name: str, call):
        began = time.perf_counter()
        try:
            return call()
        finally:
            stage_seconds[name] = stage_seconds.get(name, 0.0) + time.perf_counter() - began

    config = timed("prepare", lambda: task("prepare")(config))
    read, chunk, embed, store, lookup = (task(n) for n in ("read", "chunk", "embed", "store", "lookup"))
    with placement(settings) as (compute, local, in_flight):
        # An embedded store lives in this process only: a read elsewhere gets the heads from here.
        remote_reads = compute is not local and config.store.kind != "qdrant-server"

        def submit(group: list[SourceFile]):
            known, dependencies = None, None
            if remote_reads:
                state = lookup(group, config, return_state=True)
                known = state.result()
                dependencies = {"known": {_task_run_input(state)}}
            reading = compute.submit(read, {"files": group, "config": config, "known": known},
                                     dependencies=dependencies)
            chunking = compute.submit(chunk, {"read": reading, "config": config})
            embedding = compute.submit(embed, {"chunked": chunking, "config": config})
            return local.submit(store, {"embedded": embedding, "config": config})

        outcomes, listed, interrupted = _run_groups(params, settings, config, submit, in_flight,
                                                    stage_seconds)

    prune_report = None
    if listed is not None:  # reached only when the listing completed without error
        prune_report, deleted = timed("prune", lambda: task("prune")(config, params, listed))
        outcomes.extend(deleted)

    if any(o.status in (Status.INDEXED, Status.UPDATED) for o in outcomes):
        timed("maintain", lambda: task("maintain")(config))

    summary = RunSummary.from_outcomes(
        outcomes, collection=config.collection, seconds=time.perf_counter() - started,
        run_id=flow_run.get_id(), prune=prune_report, interrupted=interrupted,
        sources=params.sources, seconds_by_stage=stage_seconds, embed_runtime=config.embed_runtime,
        embed_choice=config.embed_choice, names=params.names)
    publish_summary(summary)
    return summary


def _task_run_input(state):
    from prefect.client.schemas.objects import TaskRunResult

    return TaskRunResult(id=state.state_details.task_run_id)


def _run_groups(params: IngestParams, settings: IngestSettings, config: PipelineConfig, submit,
                in_flight: int, stage_seconds: dict[str, float]
                ) -> tuple[list[FileOutcome], set[str] | None, bool]:
    """Feed groups of listed files to ``submit`` (at most ``in_flight`` waiting: the listing
    streams and never runs far ahead of the work) and collect them in order.

    Returns the outcomes, every listed URI (``None`` unless pruning after a complete listing),
    and whether a ``SIGTERM`` stopped it.
    """
    progress = RunProgress(f"Files ingested into {config.collection}")
    outcomes: list[FileOutcome] = []
    pending: deque = deque()

    def collect_oldest() -> None:
        group, future = pending[0]
        result = _result(group, future)
        pending.popleft()  # only now: a SIGTERM while waiting must not lose this group's rows
        outcomes.extend(result.outcomes)
        for stage, seconds in result.seconds.items():
            stage_seconds[stage] = stage_seconds.get(stage, 0.0) + seconds
        progress.update(done=len(result.outcomes))
        # Prefect's futures sit in reference cycles (the concurrent future and its Prefect
        # wrapper refer to each other), and each holds its task's final state, result
        # included: a finished group's documents, chunks and vectors are freed only by a full
        # cycle collection, which Python runs rarely. Without this, a 110-file run of real
        # documents held every group's records to its end (+470 MB resident); one collection
        # per group costs a few milliseconds (the long-lived heap is frozen once the model is
        # loaded: ``resources._freeze_long_lived``) against tens of seconds of work.
        del future
        gc.collect()

    # Prune needs every listed URI; only then is the (growing) set kept.
    listed: set[str] | None = set() if params.prune else None
    interrupted = False
    try:
        files = discover_files(params.sources, params.include)
        for group in group_files(files, max_files=settings.files_per_task,
                                 max_bytes=settings.group_bytes, first_files=FIRST_GROUP_FILES):
            if listed is not None:
                listed.update(file.uri for file in group)
            pending.append((group, submit(group)))
            progress.update(found=len(group))
            while len(pending) >= in_flight:
                collect_oldest()
        progress.update(listing_done=True)
        while pending:
            collect_oldest()
    except TerminationSignal:
        # SIGTERM (a stopping container, `kill`, a cancel from the UI): the files in flight
        # finish and are reported, none is started, nothing is pruned. A second SIGTERM while
        # draining stops at once; the head-point protocol makes any half-written file whole
        # on the next run.
        interrupted, listed = True, None
        get_run_logger().warning("termination requested: finishing %d group(s) in flight, "
                                 "starting no more files", len(pending))
        while pending:
            collect_oldest()
    return outcomes, listed, interrupted


def _result(group: list[SourceFile], future) -> GroupResult:
    """A group's result; if its chain itself broke, each of its files still gets an outcome."""
    try:
        return future.result()
    except Exception as exc:
        return GroupResult(outcomes=tuple(
            FileOutcome.rejected(f.uri, Reason.ERROR, f"task failed: {type(exc).__name__}: {exc}")
            for f in group), seconds={})
