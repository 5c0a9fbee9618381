"""The HTTP batch upload API: the original multi-file upload endpoint, on the pipeline.

    ingest api [--host 127.0.0.1] [--port 8000]

``POST /batch`` lands the uploaded files (``INGEST_LANDING``) and runs the ingest flow over
exactly those files **in this process** (Prefect ephemeral mode, or recorded on the server
named by ``PREFECT_API_URL``); ``GET /runs/{id}`` reads a run back from the Prefect API.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from typing import Annotated, Any
from uuid import UUID

from fastapi import (
    Depends,
    FastAPI,
    File,
    Header,
    HTTPException,
    Query,
    Request,
    UploadFile,
)
from fastapi.responses import JSONResponse

from tasks.core.errors import IngestError
from tasks.core.landing import Landing, UploadRejected, checked_name, distinct_names
from tasks.core.models import RunSummary
from tasks.core.resources import resources
from tasks.core.rows import file_row, hit_row
from tasks.core.settings import IngestParams, IngestSettings, PipelineConfig
from tasks.core.sources import display_name

RUN_START_TIMEOUT_S = 120


def _result_rows(summary: RunSummary, names: dict[str, str]) -> list[dict[str, Any]]:
    """One result per file (the shared file row): ``file`` is the name it was uploaded as,
    ``stored_as`` the name it landed under."""
    return [file_row(o, summary.sources, name=names.get(o.source, display_name(o.source)))
            | {"stored_as": display_name(o.source)} for o in summary.files]


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI):
    yield
    # uvicorn re-raises SIGTERM after its graceful shutdown, so atexit handlers never run:
    # flush and unlock the embedded store and stop Prefect's temporary server here.
    from prefect.server.api.server import SubprocessASGIServer

    resources().close()
    SubprocessASGIServer().stop()


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    """The API for ``settings`` (read from the environment when not given)."""
    settings = settings or IngestSettings()
    landing = Landing(settings.landing)
    app = FastAPI(title="knowledge-ingest", summary="Upload PDF and text files into the vector store",
                  lifespan=_lifespan)

    def require_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
        expected = settings.api_key.get_secret_value() if settings.api_key else None
        if expected and not (x_api_key and secrets.compare_digest(x_api_key, expected)):
            raise HTTPException(401, "missing or wrong X-API-Key")

    @app.exception_handler(UploadRejected)
    def _rejected(request: Request, exc: UploadRejected) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/batch", dependencies=[Depends(require_key)])
    def batch(files: Annotated[list[UploadFile], File(description="PDF and .txt files")],
              overwrite: Annotated[bool, Query(description="Re-embed even unchanged files")] = False,
              wait: Annotated[bool, Query(description="Answer when the run is done")] = True):
        """Land the files, then ingest exactly them; one result per file."""
        limit = int(settings.api_max_file_mb * 1024 * 1024)
        if len(files) > settings.api_max_files:
            raise UploadRejected(413, f"{len(files)} files, more than the limit of {settings.api_max_files}")
        names = distinct_names(checked_name(f.filename) for f in files)
        for upload, name in zip(files, names):  # refuse before anything is written
            if upload.size is not None and upload.size > limit:
                raise UploadRejected(413, f"{name} is larger than the limit of {limit} bytes")
        landed: dict[str, str] = {}
        for upload, name in zip(files, names):
            landing.write(name, upload.file, limit=limit)
            landed[landing.uri(name)] = upload.filename or name
        params = IngestParams.with_defaults_from(settings, sources=list(landed), overwrite=overwrite)
        return run_pipeline(params, landed, wait=wait)

    def run_pipeline(params: IngestParams, names: dict[str, str], *, wait: bool):
        from flows.ingest_flow import ingest_documents
        from tasks.core.stages.prepare import prepare

        try:
            prepare(PipelineConfig.build(settings, params), resources())
        except IngestError as exc:
            raise HTTPException(503, f"the store cannot take the run: {exc}") from exc
        if wait:
            summary = ingest_documents(**params.model_dump())
            return {"status": "done", "run_id": summary.run_id, "results": _result_rows(summary, names)}
        started = threading.Event()
        run: dict[str, str] = {}

        def on_running(flow, flow_run, state) -> None:
            run["id"] = str(flow_run.id)
            started.set()

        flow = ingest_documents.with_options(on_running=[on_running])
        threading.Thread(target=flow, kwargs=params.model_dump(), daemon=True,
                         name="ingest-upload").start()
        if not started.wait(RUN_START_TIMEOUT_S):
            raise HTTPException(503, "the run did not start in time")
        return JSONResponse({"status": "accepted", "run_id": run["id"]}, status_code=202)

    @app.get("/runs/{run_id}", dependencies=[Depends(require_key)])
    def get_run(run_id: UUID):
        """A run's state and, once it finished, one result per file (from the Prefect API)."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            ArtifactFilter,
            ArtifactFilterFlowRunId,
            ArtifactFilterType,
        )
        from prefect.exceptions import ObjectNotFound

        with get_client(sync_client=True) as client:
            try:
                flow_run = client.read_flow_run(run_id)
            except ObjectNotFound:
                raise HTTPException(404, f"no run {run_id}") from None
            tables = client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
                type=ArtifactFilterType(any_=["table"])))
        results = None
        if tables:
            import json

            rows = tables[0].data if isinstance(tables[0].data, list) else json.loads(tables[0].data)
            # The artifact holds the shared file rows (empty cells for None).
            results = [{**r, "pages": r["pages"] if r["pages"] != "" else None,
                        "stored_as": display_name(r["source"])} for r in rows]
        state = flow_run.state
        return {"run_id": str(run_id), "state": state.type.value if state else None,
                "state_name": state.name if state else None, "results": results}

    @app.get("/search", dependencies=[Depends(require_key)])
    def search(q: Annotated[str, Query(min_length=1, max_length=2000)],
               k: Annotated[int, Query(ge=1, le=100)] = 5):
        """Page-cited hits for ``q``."""
        from tasks.core.search import search as run_search

        try:
            hits = run_search(q, PipelineConfig.build(settings), resources(), limit=k)
        except IngestError as exc:
            raise HTTPException(404 if "does not exist" in str(exc) else 503, str(exc)) from exc
        return {"query": q, "hits": [hit_row(h) for h in hits]}

    return app
