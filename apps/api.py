"""The HTTP batch upload API: the original multi-file upload endpoint, on the pipeline.

    ingest api [--host 127.0.0.1] [--port 8000]

``POST /batch`` lands the uploaded files (``INGEST_LANDING``) and runs the ingest flow over
exactly those files **in this process**; ``GET /runs/{id}`` reads a run back from the Prefect
API; ``GET /search`` queries.

How it holds up under load:

* **Start-up**: the Prefect API (a temporary server unless ``PREFECT_API_URL`` names one) is
  started once, when the API starts, and the model is loaded then too; ``GET /healthz`` says
  ``ready`` only after both (``GET /livez`` answers at once). Until then, and if the start
  fails, uploads get 503 with ``Retry-After``. No request ever starts a server.
* **One run at a time, in arrival order** (``run_queue``): at most ``INGEST_API_MAX_QUEUED``
  uploads wait; beyond that, 503 with ``Retry-After``. Every admitted upload gets its flow run
  at once (``run_id``), so ``wait=false`` answers 202 right away.
* **Bounded requests**: the body is counted while it streams in (``body_limit``) and refused
  with 413 beyond ``INGEST_API_MAX_REQUEST_MB`` before it fills a disk; names are checked in
  bytes; files land all or none (``Landing.land``), and an upload whose run cannot happen
  removes what it landed.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from concurrent.futures import Future
from typing import Annotated, Any
from uuid import UUID

import anyio.to_thread
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

from apps.body_limit import BodyLimit
from apps.prefect_api import PrefectUnavailable, connection
from apps.run_queue import QueueFull, RunQueue
from tasks.core.errors import ConfigError, IngestError
from tasks.core.landing import Landing, UploadRejected, checked_name, distinct_names
from tasks.core.models import RunSummary
from tasks.core.resources import resources
from tasks.core.rows import file_rows, hit_row
from tasks.core.settings import IngestParams, IngestSettings, PipelineConfig
from tasks.core.sources import display_name
from tasks.core.sparse import SearchMode

log = logging.getLogger("ingest.api")

#: Retry-After while the API is starting (Prefect's server, the model).
STARTING_RETRY_S = 5


class Unavailable(Exception):
    """The pipeline cannot take the request right now: 503 with ``Retry-After``."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


def _result_rows(summary: RunSummary) -> list[dict[str, Any]]:
    """One result per file (the shared file row): ``file`` is the name it was uploaded as,
    ``stored_as`` the name it landed under."""
    return [row | {"stored_as": display_name(row["source"])} for row in file_rows(summary)]


class Readiness:
    """Start-up of what requests need: the Prefect API and the model, once, off the event loop."""

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self.error: str | None = None
        self._done = threading.Event()

    @property
    def ready(self) -> bool:
        return self._done.is_set() and self.error is None

    def wait(self, timeout: float | None = None) -> bool:
        """True once start-up finished (well or not) within ``timeout``."""
        return self._done.wait(timeout)

    def start(self) -> None:
        threading.Thread(target=self._warm_up, name="api-start", daemon=True).start()

    def _warm_up(self) -> None:
        try:
            owner = resources()
            model, precision = self.settings.model, self.settings.embed_precision
            owner.embedder(model, owner.runtime_for(model, precision))  # meanwhile Prefect starts
            connection().wait_ready()
            log.info("ready: Prefect API at %s, model %s loaded", connection().url, model)
        except (PrefectUnavailable, IngestError) as exc:
            self.error = str(exc)
            log.error("cannot take uploads: %s", exc)
        except Exception as exc:  # noqa: BLE001 (reported by /healthz, not lost in a thread)
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("cannot take uploads")
        finally:
            self._done.set()

    def check(self) -> None:
        """Raise ``Unavailable`` unless ready."""
        if self.error:
            raise Unavailable(f"the API cannot take uploads: {self.error}", STARTING_RETRY_S * 12)
        if not self._done.is_set():
            raise Unavailable("the API is starting (Prefect API, model); retry shortly",
                              STARTING_RETRY_S)


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    """The API for ``settings`` (read from the environment when not given). Its lifespan
    starts what it needs: use it with ``uvicorn`` or ``with TestClient(app)``."""
    settings = settings or IngestSettings()
    landing = Landing(settings.landing)
    readiness = Readiness(settings)
    runs: dict[str, RunQueue] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        prefect = connection()
        owned = not prefect.started  # a server already up (tests, an embedding app) stays up
        prefect.start(settings.prefect_start_timeout_s)
        runs["queue"] = RunQueue(settings.api_max_queued)
        # Every waiting upload holds a worker thread; keep room for the other endpoints.
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, settings.api_max_queued + 16)
        readiness.start()
        try:
            yield
        finally:
            # uvicorn re-raises SIGTERM after its graceful shutdown, so atexit handlers never
            # run: finish the admitted runs, flush and unlock the embedded store, and stop the
            # Prefect server here.
            await anyio.to_thread.run_sync(runs.pop("queue").close, 60.0)
            resources().close()
            if owned:
                prefect.stop()

    app = FastAPI(title="knowledge-ingest", summary="Upload PDF and text files into the vector store",
                  lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=settings.api_max_request_bytes)

    def require_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
        expected = settings.api_key.get_secret_value() if settings.api_key else None
        if expected and not (x_api_key and secrets.compare_digest(x_api_key, expected)):
            raise HTTPException(401, "missing or wrong X-API-Key")

    @app.exception_handler(UploadRejected)
    def _rejected(request: Request, exc: UploadRejected) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(Unavailable)
    def _unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=503,
                            headers={"Retry-After": str(exc.retry_after)})

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        """The process answers (it may still be starting)."""
        return {"status": "alive"}

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """``ready`` (200) once uploads can run; ``starting`` or ``failed`` (503) before."""
        if readiness.ready:
            return JSONResponse({"status": "ready"})
        status = "failed" if readiness.error else "starting"
        body = {"status": status} | ({"detail": readiness.error} if readiness.error else {})
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(STARTING_RETRY_S)})

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
        readiness.check()
        queue = runs.get("queue")
        if queue is None:
            raise Unavailable("the API is stopping", STARTING_RETRY_S)
        if queue.waiting >= queue.capacity:  # refuse before landing anything
            raise Unavailable(str(QueueFull(queue.waiting, queue.retry_after())), queue.retry_after())
        uris = landing.land([(name, upload.file) for upload, name in zip(files, names)], limit=limit)
        uploaded = {uri: upload.filename or name for uri, upload, name in zip(uris, files, names)}
        params = IngestParams.with_defaults_from(settings, sources=uris, overwrite=overwrite,
                                                 names=uploaded)
        try:
            run_id, done = _submit(queue, params)
        except BaseException:
            landing.remove(uris)
            raise
        if not wait:
            return JSONResponse({"status": "accepted", "run_id": run_id}, status_code=202)
        summary = done.result()
        return {"status": "done", "run_id": run_id, "results": _result_rows(summary)}

    def _submit(queue: RunQueue, params: IngestParams) -> tuple[str, Future]:
        """Record the flow run (so it has an id at once) and queue it; the future resolves to
        its summary, or raises ``Unavailable`` when the run could not happen (its landed files
        are removed then: no file without a result)."""
        from prefect.client.orchestration import get_client
        from prefect.flow_engine import run_flow
        from prefect.states import Pending

        from flows.ingest_flow import ingest_documents

        parameters = params.model_dump()
        try:
            with get_client(sync_client=True) as client:
                flow_run = client.create_flow_run(ingest_documents, parameters=parameters,
                                                  state=Pending(name="Queued"))
        except Exception as exc:  # noqa: BLE001 (the Prefect API did not answer: a 503, not a 500)
            raise Unavailable(f"the Prefect API did not record the run: {type(exc).__name__}: {exc}",
                              STARTING_RETRY_S) from exc

        def job() -> RunSummary:
            try:
                return run_flow(ingest_documents, flow_run=flow_run, parameters=parameters)
            except BaseException as exc:
                landing.remove(params.sources)
                if isinstance(exc, ConfigError):  # the settings cannot work: retrying will not help
                    raise UploadRejected(409, f"the run cannot happen: {exc}") from exc
                if isinstance(exc, IngestError):
                    raise Unavailable(f"the run could not happen: {exc}", STARTING_RETRY_S) from exc
                log.exception("upload run %s failed", flow_run.id)
                raise Unavailable(f"the run failed: {type(exc).__name__}: {exc}",
                                  STARTING_RETRY_S) from exc

        try:
            return str(flow_run.id), queue.submit(job)
        except QueueFull as exc:
            _abandon(flow_run.id, str(exc))
            raise Unavailable(str(exc), exc.retry_after) from None

    def _abandon(run_id: UUID, why: str) -> None:
        from prefect.client.orchestration import get_client
        from prefect.states import Cancelled

        with contextlib.suppress(Exception), get_client(sync_client=True) as client:
            client.set_flow_run_state(run_id, Cancelled(message=why), force=True)

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

        readiness.check()
        try:
            with get_client(sync_client=True) as client:
                try:
                    flow_run = client.read_flow_run(run_id)
                except ObjectNotFound:
                    raise HTTPException(404, f"no run {run_id}") from None
                tables = client.read_artifacts(artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
                    type=ArtifactFilterType(any_=["table"])))
        except HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001 (the Prefect API did not answer)
            raise Unavailable(f"the Prefect API did not answer: {type(exc).__name__}: {exc}",
                              STARTING_RETRY_S) from exc
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
               k: Annotated[int, Query(ge=1, le=100)] = 5,
               mode: Annotated[SearchMode, Query()] = "hybrid"):
        """Page-cited hits for ``q``: ``mode`` hybrid (meaning and keywords fused, the
        default), dense (meaning) or sparse (keywords: BM25 of words and their 4-grams)."""
        from tasks.core.search import search as run_search

        try:
            hits = run_search(q, PipelineConfig.build(settings), resources(), limit=k, mode=mode)
        except ConfigError as exc:  # e.g. keywords asked of a collection without BM25 vectors
            raise HTTPException(409, str(exc)) from exc
        except IngestError as exc:
            if "does not exist" in str(exc):
                raise HTTPException(404, str(exc)) from exc
            raise Unavailable(str(exc), STARTING_RETRY_S) from exc
        return {"query": q, "mode": mode, "hits": [hit_row(h) for h in hits]}

    return app
