"""One serializer per output shape, shared by the CLI, the HTTP API and the Prefect artifacts:
a file's result row, a search hit, and a file's log line."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

from tasks.core.models import FileOutcome, RunSummary, Status
from tasks.core.payload import Hit
from tasks.core.sources import local_path


def relative_name(uri: str, sources: Iterable[str]) -> str:
    """The file's path relative to the source it came from (its name for a file source)."""
    for source in sources:
        root = source if source.startswith("s3://") else local_path(source).resolve().as_uri()
        if uri == root.rstrip("/"):
            return unquote(uri.rsplit("/", 1)[-1])
        root = root.rstrip("/") + "/"
        if uri.startswith(root):
            return unquote(uri[len(root):])
    return unquote(uri.removeprefix("file://"))


def file_row(outcome: FileOutcome, sources: Iterable[str], *, name: str | None = None) -> dict[str, Any]:
    """A file's result: ``file`` (its path relative to its source, or ``name``) first, the full
    URI in ``source``. ``chunks``: what the file holds in the collection after the run."""
    return {"file": name if name is not None else relative_name(outcome.source, sources),
            "status": outcome.status.value, "reason": outcome.reason.value,
            "pages": outcome.pages, "ocr_pages": outcome.ocr_pages, "chunks": outcome.chunks,
            "seconds": outcome.seconds,
            "detail": outcome.detail, "source": outcome.source}


def file_rows(summary: RunSummary) -> list[dict[str, Any]]:
    """Every file's row of a run, named as the run was told (``names``) or relative to its source."""
    return [file_row(o, summary.sources, name=summary.names.get(o.source)) for o in summary.files]


def hit_row(hit: Hit) -> dict[str, Any]:
    """A search hit, citing file and pages."""
    return {"score": hit.score, "file": hit.file_name, "pages": hit.pages,
            "page_start": hit.page_start, "page_end": hit.page_end,
            "chunk_index": hit.chunk_index, "text": hit.text, "source": hit.source}


def outcome_line(outcome: FileOutcome, name: str) -> str:
    """A file's log line, status and reason said once: ``a.pdf: indexed, 4 chunks, 4 pages``,
    ``b.pdf: failed (encrypted): the PDF needs a password``."""
    counts = ", ".join(part for part in (
        f"{outcome.chunks} chunk{'s' if outcome.chunks != 1 else ''}" if outcome.chunks else "",
        f"{outcome.pages} page{'s' if outcome.pages != 1 else ''}" if outcome.pages else "") if part)
    if outcome.status in (Status.INDEXED, Status.UPDATED):
        line = f"{name}: {outcome.status.value}" + (f", {counts}" if counts else "")
        return line + (f" ({outcome.detail})" if outcome.detail else "")
    if outcome.status is Status.UNCHANGED:
        return f"{name}: unchanged" + (f", {counts} already indexed" if counts else "")
    return f"{name}: {outcome.status.value} ({outcome.reason.value})" + (
        f": {outcome.detail}" if outcome.detail else "")


def run_report(summary: RunSummary) -> dict[str, Any]:
    """A whole run as one JSON object (``ingest run --json``): its rows and totals."""
    report = summary.model_dump(mode="json", exclude={"files"})
    report["files"] = file_rows(summary)
    return report
