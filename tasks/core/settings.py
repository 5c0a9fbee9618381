"""Configuration: environment settings, per-run parameters, and the config a worker receives.

* The run parameters' types (``Sources``, ``ChunkTokens``, ...) — each rule stated once, used by
  the flow's signature (the Prefect UI's run form), ``IngestParams``, the settings and the CLI.
* ``IngestSettings`` — read from the environment (``INGEST_*``, ``QDRANT_URL``...) inside the
  flow or an entry point, never at import time.
* ``IngestParams`` — what one run ingests and how, validated as a whole.
* ``PipelineConfig`` — the frozen merge of both that travels to tasks. It holds no secrets:
  a process reads API keys from its own environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.core.ocr import OcrConfig

if TYPE_CHECKING:
    from tasks.core.precision import RuntimeChoice

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_COLLECTION = "documents"
DEFAULT_CHUNK_TOKENS = 192
DEFAULT_CHUNK_OVERLAP = 32
# Qdrant Edge builds its graph index whenever this many points wait for it, after the file
# that crossed the line is written, so each build (and the resident memory of the points not
# yet indexed) covers at most about this many points however large the collection grows;
# below it, exact search over them costs a few milliseconds. A build maps the waiting points'
# segment, a temporary one and the new one at once (~+140 MB resident for 8k real chunks), so
# smaller pieces lower the peak, and more segments slow a search a little (33k real chunks on
# Edge alone: 8k pieces peak 721 MB, search p50 2.9 ms; 4k pieces 604 MB, 4.3 ms).
EDGE_OPTIMIZE_THRESHOLD = 4_000
#: INGEST_EMBED_PRECISION: how the runtime that embeds is chosen (``precision.choose_runtime``).
EmbedPrecision = Literal["auto", "fp32", "bf16"]

Sources = Annotated[list[str], Field(
    min_length=1, title="Sources",
    description="Local folders or files, s3://bucket/prefix/ or s3://bucket/key, one or more")]
IncludeGlobs = Annotated[list[str], Field(
    title="Include globs",
    description="Only files whose relative path or name matches one of these (e.g. *.pdf); "
                "empty means every non-hidden file")]
CollectionName = Annotated[str, Field(
    pattern=r"^[A-Za-z0-9_\-]{1,128}$", title="Collection",
    description="Qdrant collection: letters, digits, '_' and '-', at most 128 characters")]
ChunkTokens = Annotated[int, Field(
    ge=16, le=8192, title="Chunk size (tokens)",
    description="Tokens per chunk, counted by the model's tokenizer; must fit the model's input")]
ChunkOverlap = Annotated[int, Field(
    ge=0, le=4096, title="Chunk overlap (tokens)",
    description="Tokens shared by neighbouring chunks, at most half the chunk size")]
Overwrite = Annotated[bool, Field(
    title="Overwrite",
    description="Re-embed every file even when it is already indexed unchanged (and drop and "
                "recreate a collection whose vector size does not fit the model)")]
Prune = Annotated[bool, Field(
    title="Prune",
    description="After a complete listing, delete the points of files no longer in the sources")]
PruneMaxFraction = Annotated[float, Field(
    ge=0.0, le=1.0, title="Prune limit",
    description="Refuse to prune (and delete nothing) when it would delete more than this "
                "fraction of the collection's files")]
ForcePrune = Annotated[bool, Field(title="Force prune", description="Prune even beyond the prune limit")]
SourceNames = Annotated[dict[str, str], Field(
    title="Names in results",
    description="How results name given files (file URI → name), e.g. the names they were "
                "uploaded under; others are named by their path relative to their source")]


def validation_message(exc: ValidationError) -> str:
    """A validation error as one line: ``invalid chunk_tokens: …``."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "parameters"
    message = first["msg"].removeprefix("Value error, ")
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"invalid {where}: {message}{more}"


def check_chunking(chunk_tokens: int, chunk_overlap: int) -> None:
    """The one rule that ties chunk size and overlap together."""
    if chunk_overlap * 2 > chunk_tokens:
        raise ValueError(
            f"chunk_overlap ({chunk_overlap}) must be at most half of chunk_tokens ({chunk_tokens})"
        )


class IngestSettings(BaseSettings):
    """Process-wide settings from the environment (prefix ``INGEST_``)."""

    model_config = SettingsConfigDict(env_prefix="INGEST_", extra="ignore", populate_by_name=True)

    qdrant_path: Path = Field(Path(".ingest/qdrant"), description="Embedded store folder")
    store: Literal["edge", "qdrant-local"] = Field(
        "edge", description="Embedded backend: Qdrant Edge, or qdrant-client's local mode")
    edge_optimize_threshold: int = Field(
        EDGE_OPTIMIZE_THRESHOLD, ge=0,
        description="Points waiting for Edge's graph index that make the store build it")
    qdrant_url: str | None = Field(
        None, validation_alias=AliasChoices("QDRANT_URL", "INGEST_QDRANT_URL"),
        description="Qdrant server URL; when set, the embedded store is not used")
    qdrant_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("QDRANT_API_KEY", "INGEST_QDRANT_API_KEY"))
    model: str = Field(DEFAULT_MODEL, min_length=1)
    collection: CollectionName = DEFAULT_COLLECTION
    chunk_tokens: ChunkTokens = DEFAULT_CHUNK_TOKENS
    chunk_overlap: ChunkOverlap = DEFAULT_CHUNK_OVERLAP
    embed_batch_size: int = Field(16, ge=1, le=1024, description="Most texts per forward pass")
    embed_precision: EmbedPrecision = Field(
        "auto", description="auto: the fastest runtime this CPU has (fp32 on torch or OpenVINO; "
                            "bf16 on OpenVINO or torch autocast) whose vectors pass the quality "
                            "gate against fp32, timed at start-up; an existing collection keeps "
                            "the vectors it was built with (fp32 on either engine are the same). "
                            "fp32: the reference, on torch. bf16: the fastest bf16 runtime if "
                            "faster than fp32")
    upsert_batch: int = Field(256, ge=1, le=10_000)
    max_file_mb: float = Field(100.0, gt=0)
    max_pages: int = Field(2000, ge=1)
    max_file_chars: int = Field(
        32_000_000, ge=1, description="Characters of text one file may produce; beyond them the "
                                      "file is too_large (a small PDF can inflate to much text)")
    max_file_chunks: int = Field(
        10_000, ge=1, description="Chunks one file may produce; beyond it the file is too_large "
                                  "(10,000 chunks of 192 tokens: ~7 MB of English prose)")
    parse_timeout: float = Field(60.0, gt=0, description="Seconds of CPU one PDF may use to parse "
                                                       "(CPU, not wall time: a busy machine does not fail files)")
    parse_memory_mb: int = Field(1024, ge=128, description="Address space of a PDF parse worker")
    parse_workers: int = Field(2, ge=1, le=64, description="Processes parsing PDFs")
    ocr: Literal["auto", "off", "force"] = Field(
        "auto", description="OCR of PDF pages: auto reads the pages without a text layer, force "
                            "every page, off none; auto means off without the [ocr] extra")
    ocr_dpi: int = Field(200, ge=72, le=600, description="Resolution pages are rendered at for OCR")
    ocr_max_pages: int = Field(100, ge=1, description="Pages of one file OCR reads at most; "
                                                      "the rest are left without text (noted)")
    ocr_page_timeout: float = Field(60.0, gt=0, description="Seconds of CPU OCR may spend on one "
                                                            "page before giving up on it")
    workers: int = Field(3, ge=1, le=64, description="Threads running file groups")
    files_per_task: int = Field(48, ge=1, le=1000, description="Files per Prefect task run (embedded together)")
    group_mb: float = Field(16.0, gt=0, description="Listed megabytes of files per task run at "
                                                    "most (a larger file goes alone): what a "
                                                    "group holds in memory grows with it")
    retries: int = Field(3, ge=0, le=20)
    retry_backoff_s: float = Field(2.0, ge=0)
    dask_address: str | None = Field(
        None, description="Scheduler of an existing Dask cluster (tcp://host:port): file groups "
                          "are read, parsed and embedded on its workers")
    dask_workers: int | None = Field(
        None, ge=1, le=256, description="Start a temporary local Dask cluster of this many worker "
                                        "processes for the run")
    store_wait_s: float = Field(900.0, ge=0, description="How long a run waits for another run "
                                                         "holding the embedded store")
    landing: str = Field(".ingest/landing", description="Where the upload API lands files: "
                                                         "a folder or s3://bucket/prefix")
    api_key: SecretStr | None = Field(None, description="When set, the upload API requires it "
                                                        "in the X-API-Key header")
    api_max_files: int = Field(20, ge=1, le=1000, description="Files per upload request")
    api_max_file_mb: float = Field(50.0, gt=0, description="Size of one uploaded file")
    api_max_request_mb: float | None = Field(
        None, gt=0, description="Size of a whole upload request, enforced while it streams in; "
                                "default: api_max_files × api_max_file_mb, plus 64 KB for the "
                                "multipart framing")
    api_max_queued: int = Field(
        8, ge=1, le=256, description="Upload runs waiting for their turn; a request beyond "
                                     "them gets 503 with Retry-After")
    cache_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "knowledge-ingest",
        description="What later processes reuse: the model converted for OpenVINO (~2 s per "
                    "process saved), and what embeds a search query with it without torch")
    prefect_start_timeout_s: float = Field(
        180.0, gt=0, description="How long an entry point waits for the Prefect API (its "
                                 "temporary server takes 7 s on a quiet machine, 20-40 s on a "
                                 "busy one)")

    @property
    def group_bytes(self) -> int:
        """``group_mb`` in bytes."""
        return int(self.group_mb * 1024 * 1024)

    @property
    def api_max_request_bytes(self) -> int:
        """The upload API's bound on a request body."""
        if self.api_max_request_mb:
            return int(self.api_max_request_mb * 1024 * 1024)
        return int(self.api_max_files * self.api_max_file_mb * 1024 * 1024) + 64 * 1024

    @model_validator(mode="after")
    def _chunking(self) -> IngestSettings:
        check_chunking(self.chunk_tokens, self.chunk_overlap)
        return self

    @model_validator(mode="after")
    def _ocr_installed(self) -> IngestSettings:
        from tasks.core.ocr import EXTRA_HINT, available

        if self.ocr == "force" and not available():
            raise ValueError(f"INGEST_OCR=force needs the OCR engine: {EXTRA_HINT}")
        return self

    def ocr_config(self) -> OcrConfig:
        """How PDFs are OCR'd in this process's runs: ``auto`` is ``off`` without the extra."""
        from tasks.core.ocr import available, engine_version

        mode = self.ocr if self.ocr == "off" or available() else "off"
        return OcrConfig(mode=mode, dpi=self.ocr_dpi, max_pages=self.ocr_max_pages,
                         page_timeout_s=self.ocr_page_timeout,
                         engine=engine_version() if mode != "off" else "")

    def store_location(self) -> StoreLocation:
        """Where the vectors live: a server when ``QDRANT_URL`` is set, else the embedded store."""
        if self.qdrant_url:
            return StoreLocation(kind="qdrant-server", url=self.qdrant_url)
        return StoreLocation.embedded(self.store, self.qdrant_path,
                                      optimize_threshold=self.edge_optimize_threshold)


class IngestParams(BaseModel):
    """What one run ingests and how (the flow's parameters, validated together)."""

    model_config = ConfigDict(frozen=True, title="Ingest parameters")

    sources: Sources
    include: IncludeGlobs = []
    collection: CollectionName = DEFAULT_COLLECTION
    chunk_tokens: ChunkTokens = DEFAULT_CHUNK_TOKENS
    chunk_overlap: ChunkOverlap = DEFAULT_CHUNK_OVERLAP
    overwrite: Overwrite = False
    prune: Prune = False
    prune_max_fraction: PruneMaxFraction = 0.5
    force_prune: ForcePrune = False
    names: SourceNames = {}

    @model_validator(mode="after")
    def _chunking(self) -> IngestParams:
        check_chunking(self.chunk_tokens, self.chunk_overlap)
        return self

    @classmethod
    def with_defaults_from(cls, settings: IngestSettings, *, collection: str | None = None,
                           chunk_tokens: int | None = None, chunk_overlap: int | None = None,
                           **params) -> IngestParams:
        """Parameters whose unset collection and chunking come from the settings
        (``INGEST_COLLECTION``, ``INGEST_CHUNK_*``): the CLI's, the API's and the deployments'
        defaults. A default overlap larger than half a smaller chunk given here is halved."""
        tokens = chunk_tokens if chunk_tokens is not None else settings.chunk_tokens
        overlap = (chunk_overlap if chunk_overlap is not None
                   else min(settings.chunk_overlap, tokens // 2))
        return cls(collection=collection or settings.collection, chunk_tokens=tokens,
                   chunk_overlap=overlap, **params)


StoreKind = Literal["edge", "qdrant-local", "qdrant-server"]


class StoreLocation(BaseModel):
    """Where the vectors live: an embedded folder (Edge or qdrant-local) or a server URL."""

    model_config = ConfigDict(frozen=True)

    kind: StoreKind = "edge"
    path: str | None = None
    url: str | None = None
    #: Edge only: points waiting for the graph index that make the store build it.
    optimize_threshold: int = EDGE_OPTIMIZE_THRESHOLD

    @model_validator(mode="after")
    def _one(self) -> StoreLocation:
        if (self.kind == "qdrant-server") != (self.url is not None) or (self.path is None) == (self.url is None):
            raise ValueError("a server location needs a url; an embedded one needs a path")
        return self

    @classmethod
    def embedded(cls, kind: StoreKind, root: Path | str, *,
                 optimize_threshold: int = EDGE_OPTIMIZE_THRESHOLD) -> StoreLocation:
        """Edge keeps one shard folder per collection under ``root/edge``; qdrant-local uses
        ``root`` itself, so both can live under one INGEST_QDRANT_PATH."""
        root = Path(root).expanduser().resolve()
        return cls(kind=kind, path=str(root / "edge" if kind == "edge" else root),
                   optimize_threshold=optimize_threshold)

    def describe(self) -> str:
        return self.url if self.url else f"{self.kind}:{self.path}"


class PipelineConfig(BaseModel):
    """Everything a stage needs to process files; frozen and hashable, free of secrets."""

    model_config = ConfigDict(frozen=True)

    model: str
    collection: str
    chunk_tokens: int
    chunk_overlap: int
    embed_batch_size: int
    embed_precision: EmbedPrecision = "auto"
    #: The runtime chosen for ``embed_precision`` on the flow's machine (``fp32``, ``bf16``,
    #: ``fp32-openvino``, ``bf16-openvino``; see ``precision.choose_runtime``); set once per run
    #: by ``prepare``, so every worker embeds, and fingerprints, with the same one.
    embed_runtime: str | None = None
    #: Why ``prepare`` chose that runtime (one line, for the run's summary).
    embed_choice: str | None = None
    upsert_batch: int
    max_file_bytes: int
    max_pages: int
    max_text_chars: int = 32_000_000
    max_chunks: int = 10_000
    parse_timeout_s: float = 60.0
    parse_memory_mb: int = 1024
    parse_workers: int = 2
    ocr: OcrConfig = OcrConfig()
    store: StoreLocation
    overwrite: bool = False

    @classmethod
    def build(cls, settings: IngestSettings, params: IngestParams | None = None) -> PipelineConfig:
        """Merge run parameters over settings (without parameters: the settings' collection and
        chunking, e.g. for search)."""
        params = params or IngestParams.with_defaults_from(settings, sources=["."])
        return cls(
            model=settings.model,
            collection=params.collection,
            chunk_tokens=params.chunk_tokens,
            chunk_overlap=params.chunk_overlap,
            embed_batch_size=settings.embed_batch_size,
            embed_precision=settings.embed_precision,
            upsert_batch=settings.upsert_batch,
            max_file_bytes=int(settings.max_file_mb * 1024 * 1024),
            max_pages=settings.max_pages,
            max_text_chars=settings.max_file_chars,
            max_chunks=settings.max_file_chunks,
            parse_timeout_s=settings.parse_timeout,
            parse_memory_mb=settings.parse_memory_mb,
            parse_workers=settings.parse_workers,
            ocr=settings.ocr_config(),
            store=settings.store_location(),
            overwrite=params.overwrite,
        )

    def with_runtime(self, choice: RuntimeChoice | str) -> PipelineConfig:
        """This config with the embedding runtime ``prepare`` chose (a ``RuntimeChoice``, or a
        runtime's name)."""
        if isinstance(choice, str):
            return self.model_copy(update={"embed_runtime": choice, "embed_choice": None})
        return self.model_copy(update={"embed_runtime": choice.runtime, "embed_choice": choice.why})

    @property
    def fingerprint(self) -> str:
        """What, besides a file's bytes, decides its points (see ``ids.config_fingerprint``)."""
        from tasks.core.ids import config_fingerprint, vectors_label

        if self.embed_runtime is None:
            raise RuntimeError("the embedding runtime is chosen by prepare() before any file is read")
        return config_fingerprint(model=self.model, chunk_tokens=self.chunk_tokens,
                                  chunk_overlap=self.chunk_overlap,
                                  precision=vectors_label(self.embed_runtime))
