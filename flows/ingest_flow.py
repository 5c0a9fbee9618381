"""The ingest flow: discover files, run groups of them through read→chunk→embed→store, report.

Files are grouped into task runs of ``INGEST_FILES_PER_TASK``: Prefect records every task run
on its server (~20–35 ms each, after the flow), so one task run per file would cost more than
the work on large batches, while per-file outcomes and retries are kept inside each group.
"""

from __future__ import annotations

import itertools
import time
from collections import deque

from prefect import flow, get_run_logger
from prefect.exceptions import TerminationSignal
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from flows.progress import RunProgress
from flows.report import publish_summary
from flows.runners import dask_runner
from tasks.core.models import FileOutcome, Reason, RunSummary, SourceFile, Status
from tasks.core.process import PreparedFile
from tasks.core.settings import IngestParams, IngestSettings, PipelineConfig
from tasks.core.sources import discover_files
from tasks.core.store import exclusive_run
from tasks.ingest import (
    embed_files,
    ingest_files,
    lookup_heads,
    maintain_store,
    prepare_collection,
    prune_collection,
    store_files,
)


def _retry_options(settings: IngestSettings) -> dict:
    delay = (exponential_backoff(backoff_factor=settings.retry_backoff_s)
             if settings.retry_backoff_s > 0 else 0)
    return {"retries": settings.retries, "retry_delay_seconds": delay}


def _task_failed(group: list[SourceFile], exc: Exception) -> list[FileOutcome]:
    """The task itself broke: its files still get an outcome each."""
    return [FileOutcome.rejected(f.uri, Reason.ERROR, f"task failed: {type(exc).__name__}: {exc}")
            for f in group]


def _outcomes(group: list[SourceFile], future) -> list[FileOutcome]:
    try:
        return future.result()
    except Exception as exc:
        return _task_failed(group, exc)


def _prepared(group: list[SourceFile], future) -> list[PreparedFile]:
    try:
        return future.result()
    except Exception as exc:
        return [PreparedFile(outcome) for outcome in _task_failed(group, exc)]


@flow(name="ingest-documents", task_runner=ThreadPoolTaskRunner(max_workers=3),
      validate_parameters=True)
def ingest_documents(params: IngestParams) -> RunSummary:
    """Ingest every file of ``params.sources`` into the vector store; one outcome per file."""
    started = time.perf_counter()
    settings = IngestSettings()
    config = PipelineConfig.build(settings, params)
    logger = get_run_logger()
    shown = ", ".join(params.sources[:3]) + (f" and {len(params.sources) - 3} more"
                                             if len(params.sources) > 3 else "")
    logger.info("ingesting %s into %r (%s)", shown, config.collection, config.store.describe())
    with exclusive_run(config.store, wait_s=settings.store_wait_s,
                       on_wait=lambda: logger.info("another run holds the embedded store; waiting")):
        summary = _ingest(params, settings, config, started)
    t = summary.totals
    logger.info("%d files: %d indexed, %d updated, %d unchanged, %d skipped, %d failed, %d deleted; "
                "%d chunks in %.1fs", t.files, t.indexed, t.updated, t.unchanged, t.skipped, t.failed,
                t.deleted, t.chunks, t.seconds)
    return summary


def _ingest(params: IngestParams, settings: IngestSettings, config: PipelineConfig,
            started: float) -> RunSummary:
    retry = _retry_options(settings)
    prepare_collection.with_options(**retry)(config)
    dask = dask_runner(settings)
    if dask is None:
        ingest = ingest_files.with_options(**retry)
        return _run_groups(params, settings, config, started, submit=ingest.submit, finish=_outcomes,
                           in_flight=max(2, settings.workers * 2))
    # Dask: workers embed; the heads are looked up and the points written here, where the store is.
    embed = embed_files.with_options(**retry)
    lookup, write = lookup_heads.with_options(**retry), store_files.with_options(**retry)
    with dask:
        workers = len(dask.client.scheduler_info()["workers"])
        get_run_logger().info("embedding on %d Dask worker(s) at %s", workers, dask.client.scheduler.address)
        return _run_groups(
            params, settings, config, started,
            submit=lambda group, cfg: dask.submit(embed, parameters={
                "files": group, "config": cfg, "known": lookup(group, cfg)}),
            finish=lambda group, future: write(_prepared(group, future), config),
            in_flight=max(2, workers * 2))


def _run_groups(params: IngestParams, settings: IngestSettings, config: PipelineConfig,
                started: float, *, submit, finish, in_flight: int) -> RunSummary:
    """Feed groups of listed files to ``submit`` (at most ``in_flight`` waiting: the listing
    streams and never runs far ahead of the work), ``finish`` them in order, prune, report."""
    retry = _retry_options(settings)
    progress = RunProgress(f"Files ingested into {config.collection}")
    outcomes: list[FileOutcome] = []
    pending: deque = deque()

    def collect_oldest() -> None:
        group, future = pending[0]
        finished = finish(group, future)
        pending.popleft()  # only now: a SIGTERM while waiting must not lose this group's rows
        outcomes.extend(finished)
        progress.update(done=len(finished))

    # Prune needs every listed URI; only then is the (growing) set kept.
    listed: set[str] | None = set() if params.prune else None
    interrupted = False
    try:
        files = discover_files(params.sources, params.include)
        while group := list(itertools.islice(files, settings.files_per_task)):
            if listed is not None:
                listed.update(file.uri for file in group)
            pending.append((group, submit(group, config)))
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

    prune = None
    if listed is not None:  # reached only when the listing completed without error
        prune, deleted = prune_collection.with_options(**retry)(config, params, listed)
        outcomes.extend(deleted)

    if any(o.status in (Status.INDEXED, Status.UPDATED) for o in outcomes):
        maintain_store(config)

    summary = RunSummary.from_outcomes(outcomes, collection=config.collection,
                                       seconds=time.perf_counter() - started,
                                       run_id=flow_run.get_id(), prune=prune,
                                       interrupted=interrupted)
    publish_summary(summary)
    return summary
