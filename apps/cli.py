"""The ``ingest`` command line: ``ingest run`` runs the flow, ``ingest search`` queries.

Exit codes: 0 when a run completed (even if some files failed: their rows say so), 1 when the
run could not happen (store unreachable, collection mismatch, ...), 2 for bad arguments.
Errors are one line on standard error.
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from typing import Annotated, NoReturn, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tasks.core.heap import advise_huge_pages_to_torch, bound_onednn_kernel_cache, limit_malloc_arenas
from tasks.core.sparse import SEARCH_MODES

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Ingest PDF and text documents into a Qdrant vector store.")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


# ``ingest search --mode``: the modes the search call knows (a light import: no model, no store).
SearchModeOption = Enum("SearchModeOption", {mode: mode for mode in SEARCH_MODES}, type=str)


def _fail(message: str, code: int = 1) -> NoReturn:
    # Escaped: a message may hold brackets (a file name, "pip install 'knowledge-ingest[dask]'").
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    raise typer.Exit(code)


def _settings():
    from tasks.core.settings import IngestSettings, validation_message

    try:
        return IngestSettings()
    except ValidationError as exc:
        _fail(f"bad environment setting: {validation_message(exc)}", 2)


def _configure_prefect(verbose: bool) -> None:
    """Before Prefect is imported: no telemetry (offline), and unless ``--verbose`` keep its
    per-task INFO lines off the terminal (they still reach the Prefect API and UI)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if verbose:
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "INFO"
    else:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")


def _status_style(status: str) -> str:
    return {"indexed": "green", "updated": "green", "unchanged": "cyan", "skipped": "yellow",
            "failed": "red", "deleted": "magenta"}[status]


def _print_summary(summary) -> None:
    from tasks.core.rows import file_rows

    table = Table(title=f"Ingest into {summary.collection!r}", title_justify="left")
    for column, justify in (("file", "left"), ("status", "left"), ("reason", "left"),
                            ("pages", "right"), ("chunks", "right"), ("seconds", "right"),
                            ("detail", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for row in file_rows(summary):
        style = _status_style(row["status"])
        # Cells are plain text (markup=False): a name like report[1].pdf must stay as it is.
        table.add_row(escape(row["file"]), f"[{style}]{row['status']}[/]",
                      "" if row["reason"] == "ok" else row["reason"],
                      "" if row["pages"] is None else str(row["pages"]), str(row["chunks"]),
                      f"{row['seconds']:.2f}", escape(row["detail"]))
    out.print(table)
    t = summary.totals
    counts = ", ".join(f"[{_status_style(name)}]{count} {name}[/]" for name, count in (
        ("indexed", t.indexed), ("updated", t.updated), ("unchanged", t.unchanged),
        ("skipped", t.skipped), ("failed", t.failed), ("deleted", t.deleted)) if count)
    stages = ", ".join(f"{stage} {seconds:.1f}s" for stage, seconds in t.seconds_by_stage.items())
    out.print(f"{t.files} files: {counts or 'none'} — {t.chunks_embedded} chunks embedded in "
              f"{t.seconds:.1f}s ({t.chunks_per_second} chunks/s)"
              + (f"; {t.ocr_pages} pages read by OCR" if t.ocr_pages else "")
              + (f"; by stage: {stages}" if stages else ""), highlight=False)
    if summary.prune is not None and summary.prune.refused:
        err.print(f"[bold yellow]warning:[/] {escape(summary.prune.refused)}", highlight=False)


@app.command()
def run(
    sources: Annotated[list[str], typer.Argument(help="Folders, files, s3://bucket/prefix/ or s3://bucket/key")],
    collection: Annotated[Optional[str], typer.Option(help="Qdrant collection [INGEST_COLLECTION]")] = None,
    include: Annotated[Optional[list[str]], typer.Option("--include", "-i", help="Glob on relative path or name; repeatable")] = None,
    overwrite: Annotated[bool, typer.Option(help="Re-embed files even when already indexed unchanged; "
                                                 "recreate a collection of another vector size")] = False,
    prune: Annotated[bool, typer.Option(help="Delete indexed files that are no longer in SOURCES")] = False,
    prune_max_fraction: Annotated[float, typer.Option(help="Refuse a prune deleting more than this "
                                                           "fraction of the collection's files")] = 0.5,
    force_prune: Annotated[bool, typer.Option(help="Prune even beyond --prune-max-fraction")] = False,
    chunk_tokens: Annotated[Optional[int], typer.Option(help="Tokens per chunk [INGEST_CHUNK_TOKENS]")] = None,
    chunk_overlap: Annotated[Optional[int], typer.Option(help="Overlap in tokens [INGEST_CHUNK_OVERLAP]")] = None,
    dask_address: Annotated[Optional[str], typer.Option(
        help="Embed on an existing Dask cluster: its scheduler, tcp://host:port [INGEST_DASK_ADDRESS]")] = None,
    dask_workers: Annotated[Optional[int], typer.Option(
        min=1, help="Embed on a temporary local Dask cluster of N worker processes [INGEST_DASK_WORKERS]")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's log lines")] = False,
) -> None:
    """Ingest every file of SOURCES and print one outcome per file."""
    _configure_prefect(verbose)
    from apps.prefect_api import PrefectUnavailable, connection
    from flows.runners import dask_runner
    from tasks.core.errors import IngestError
    from tasks.core.resources import resources
    from tasks.core.rows import run_report
    from tasks.core.settings import IngestParams, PipelineConfig, validation_message
    from tasks.core.sources import check_sources
    from tasks.core.stages.prepare import prepare

    settings = _settings()
    try:
        params = IngestParams.with_defaults_from(
            settings, sources=sources, include=include or [], collection=collection,
            overwrite=overwrite, chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap,
            prune=prune or force_prune, prune_max_fraction=prune_max_fraction,
            force_prune=force_prune)
    except ValidationError as exc:
        _fail(validation_message(exc), 2)
    config = PipelineConfig.build(settings, params)
    try:
        # A store that cannot be used (an embedded one another run holds, a server that does not
        # answer) ends the command before anything is started.
        resources().store(config.store).collection_dimension(config.collection)
    except IngestError as exc:
        _fail(str(exc))
    # Prefect's API next: its temporary server starts while the sources are checked and the
    # model loads below.
    prefect = connection()
    prefect.start(settings.prefect_start_timeout_s)
    try:
        # Everything that would make the whole run impossible is checked here, before Prefect
        # starts, so it ends as one line instead of a flow-run traceback.
        runner = dask_runner(dask_address or settings.dask_address,
                             dask_workers or settings.dask_workers)
        check_sources(params.sources)
        prepare(config, resources())
        prefect.wait_ready()
    except (IngestError, PrefectUnavailable, ValueError) as exc:
        _fail(str(exc))

    from flows import progress
    from flows.ingest_flow import ingest_documents

    flow = ingest_documents if runner is None else ingest_documents.with_options(task_runner=runner)
    bar = None if as_json or not err.is_terminal else _progress_bar()
    try:
        if bar is not None:
            with bar:
                task_id = bar.add_task("ingesting", total=None)
                with progress.listening(lambda done, found, listed: bar.update(
                        task_id, completed=done, total=found if listed else None)):
                    summary = flow(**params.model_dump())
        else:
            summary = flow(**params.model_dump())
    except IngestError as exc:
        _fail(str(exc))
    except Exception as exc:
        _fail(f"the run failed: {type(exc).__name__}: {exc}")
    if as_json:
        sys.stdout.write(json.dumps(run_report(summary)) + "\n")
    else:
        _print_summary(summary)
    if summary.interrupted:
        err.print("[bold yellow]interrupted:[/] files in flight finished; run again to ingest the "
                  "rest (unchanged files are skipped)", highlight=False)
        raise typer.Exit(143)  # 128 + SIGTERM, as if the signal had ended the process


def _progress_bar():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, transient=True)


def _config(collection: str | None):
    """The config of commands that only read a collection (search, export)."""
    from tasks.core.settings import IngestParams, PipelineConfig, validation_message

    settings = _settings()
    try:
        return PipelineConfig.build(settings, IngestParams.with_defaults_from(
            settings, sources=["."], collection=collection))
    except ValidationError as exc:
        _fail(validation_message(exc), 2)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for")],
    collection: Annotated[Optional[str], typer.Option(help="Qdrant collection [INGEST_COLLECTION]")] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="Number of hits")] = 5,
    mode: Annotated[SearchModeOption, typer.Option(
        help="hybrid: meaning and keywords fused; dense: meaning only; sparse: keywords (BM25) only",
    )] = SearchModeOption("hybrid"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
) -> None:
    """Show the chunks that best answer QUERY, citing file and page."""
    from tasks.core.errors import IngestError
    from tasks.core.resources import resources
    from tasks.core.rows import hit_row
    from tasks.core.search import search as run_search

    try:
        config = _config(collection)
        hits = run_search(query, config, resources(), limit=k, mode=mode.value)
    except IngestError as exc:
        _fail(str(exc))
    if as_json:
        sys.stdout.write(json.dumps([hit_row(h) for h in hits]) + "\n")
        return
    if not hits:
        out.print(f"no hits in {config.collection!r}")
        return
    table = Table(title=f"{query!r} in {config.collection!r}", title_justify="left", show_lines=True)
    for column in ("score", "file", "pages", "text"):
        table.add_column(column, overflow="fold")
    for hit in hits:
        table.add_row(f"{hit.score:.3f}", escape(hit.file_name), hit.pages, escape(hit.snippet()))
    out.print(table)


@app.command()
def export(
    collection: Annotated[Optional[str], typer.Option(help="Qdrant collection [INGEST_COLLECTION]")] = None,
    vectors: Annotated[bool, typer.Option("--vectors", help="Include each point's vector")] = False,
) -> None:
    """Write every point of a collection to standard output as JSON lines."""
    from tasks.core.errors import IngestError
    from tasks.core.resources import resources
    from tasks.core.transfer import export_records

    config = _config(collection)
    try:
        for record in export_records(resources().store(config.store), config.collection, vectors=vectors):
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    except IngestError as exc:
        _fail(str(exc))


@app.command()
def migrate(
    from_kind: Annotated[str, typer.Option("--from", help="Backend to copy from: qdrant-local or edge")],
    to_kind: Annotated[str, typer.Option("--to", help="Backend to copy to: edge or qdrant-local")],
    collection: Annotated[Optional[str], typer.Option(help="Qdrant collection [INGEST_COLLECTION]")] = None,
    from_path: Annotated[Optional[str], typer.Option(help="Store folder to read [INGEST_QDRANT_PATH]")] = None,
    to_path: Annotated[Optional[str], typer.Option(help="Store folder to write [INGEST_QDRANT_PATH]")] = None,
) -> None:
    """Copy an embedded collection to another backend, without re-embedding."""
    from tasks.core.errors import IngestError
    from tasks.core.settings import StoreLocation
    from tasks.core.sparse import Bm25Encoder
    from tasks.core.store import open_store
    from tasks.core.transfer import copy_collection

    kinds = ("qdrant-local", "edge")
    if from_kind not in kinds or to_kind not in kinds or from_kind == to_kind:
        _fail(f"--from and --to must be two different backends among {', '.join(kinds)}", 2)
    settings = _settings()
    name = collection or settings.collection
    source = open_store(StoreLocation.embedded(from_kind, from_path or settings.qdrant_path))
    target = open_store(StoreLocation.embedded(to_kind, to_path or settings.qdrant_path))
    try:
        copied = copy_collection(source, target, name, encode=Bm25Encoder().documents)
    except IngestError as exc:
        _fail(str(exc))
    finally:
        source.close()
        target.close()
    out.print(f"copied {copied} points of {name!r} from {from_kind} to {to_kind}", highlight=False)


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
) -> None:
    """Serve the HTTP batch upload API (POST /batch, GET /runs/{id}, GET /search, GET /healthz)."""
    _configure_prefect(verbose=False)
    # Prefect configures logging (resetting uvicorn's loggers) when ``prefect.main`` loads, on
    # the first flow run otherwise: loaded first, uvicorn's configuration (its access log) and
    # the API's own log lines come after it and stay.
    import copy

    import prefect.main  # noqa: F401
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from apps.api import create_app

    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["ingest"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    uvicorn.run(create_app(_settings()), host=host, port=port, log_config=log_config)


@app.command()
def watch(
    url: Annotated[str, typer.Argument(help="s3://bucket/prefix to watch")],
    queue_url: Annotated[Optional[str], typer.Option(
        "--queue-url", help="SQS queue receiving the bucket's event notifications; "
                            "without it the prefix is polled")] = None,
    interval: Annotated[float, typer.Option(min=0.5, help="Seconds between polls (polling mode)")] = 10.0,
    settle: Annotated[float, typer.Option(min=0.0, help="A batch closes after this many quiet seconds")] = 2.0,
    max_wait: Annotated[float, typer.Option(min=0.0, help="...or when its oldest object waited this long")] = 30.0,
    max_batch: Annotated[int, typer.Option(min=1, max=1000, help="...or when it holds this many objects")] = 500,
    state: Annotated[Optional[str], typer.Option(help="SQLite file remembering what was announced "
                                                      "[.ingest/watch/<bucket>-<hash>.sqlite]")] = None,
    backfill: Annotated[bool, typer.Option(help="On the first start, announce the objects already "
                                                "there (polling mode)")] = False,
    max_seconds: Annotated[Optional[float], typer.Option(help="Stop after this long (default: run until "
                                                              "SIGINT/SIGTERM)")] = None,
) -> None:
    """Emit Prefect events `s3.object.created` for new objects under URL, in coalesced batches."""
    import hashlib
    import logging
    import signal
    from pathlib import Path

    _configure_prefect(verbose=False)
    from prefect.settings import PREFECT_API_URL

    from tasks.core.errors import IngestError
    from tasks.core.watch import (
        BucketWatcher,
        Coalescer,
        SqsQueue,
        WatchState,
        split_s3_url,
    )

    if not PREFECT_API_URL.value():
        _fail("ingest watch sends events to a Prefect server: set PREFECT_API_URL "
              "(e.g. http://127.0.0.1:4200/api)", 2)
    try:
        bucket, _ = split_s3_url(url)
    except IngestError as exc:
        _fail(str(exc), 2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    from apps.events import EventSender

    digest = hashlib.sha1(f"{url}|{queue_url}".encode()).hexdigest()[:10]
    watch_state = WatchState(Path(state or f".ingest/watch/{bucket}-{digest}.sqlite"))
    sender = EventSender(watched=url)
    watcher = BucketWatcher(url, sender, watch_state,
                            queue=SqsQueue(queue_url) if queue_url else None, interval_s=interval,
                            coalescer=Coalescer(settle_s=settle, max_wait_s=max_wait, max_batch=max_batch),
                            backfill=backfill)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: watcher.stop())
    err.print(f"watching {url} ({'SQS ' + queue_url if queue_url else f'polling every {interval:g}s'}); "
              "events go to " + str(PREFECT_API_URL.value()), highlight=False)
    try:
        watcher.run(max_seconds=max_seconds)
    except IngestError as exc:
        _fail(str(exc))
    finally:
        sender.close()
        watch_state.close()
    err.print(f"stopped after emitting {watcher.emitted} events", highlight=False)


def main() -> None:
    # Before any thread of this process starts (setting the environment while other threads
    # may read it is not safe; the model's loader sets these too, for a flow run elsewhere).
    limit_malloc_arenas()
    advise_huge_pages_to_torch()
    bound_onednn_kernel_cache()
    app()


if __name__ == "__main__":
    main()
