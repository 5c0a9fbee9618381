"""Run reports: the per-file table and the totals published as Prefect artifacts."""

from __future__ import annotations

import re

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.core.models import RunSummary
from tasks.core.rows import file_rows


def artifact_key(collection: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    slug = re.sub(r"[^a-z0-9-]+", "-", collection.lower()).strip("-") or "default"
    return f"ingest-{slug}"


def summary_rows(summary: RunSummary) -> list[dict]:
    """One table row per file (the shared file row: path relative to its source first)."""
    return [{k: ("" if v is None else v) for k, v in row.items()} for row in file_rows(summary)]


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def summary_markdown(summary: RunSummary) -> str:
    """Totals, where the time went, and the files not indexed, for the run's markdown artifact."""
    t = summary.totals
    lines = [
        f"# Ingest run into `{summary.collection}`",
        "",
        "| files | indexed | updated | unchanged | skipped | failed | deleted | pages "
        "| OCR pages | chunks | chunks embedded | seconds | chunks/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {t.files} | {t.indexed} | {t.updated} | {t.unchanged} | {t.skipped} | {t.failed} "
        f"| {t.deleted} | {t.pages} | {t.ocr_pages} | {t.chunks} | {t.chunks_embedded} | {t.seconds} "
        f"| {t.chunks_per_second} |",
    ]
    if summary.embed_runtime:
        lines += ["", f"Embedding runtime: `{summary.embed_runtime}`"
                  + (f" — {_cell(summary.embed_choice)}." if summary.embed_choice else ".")]
    if t.seconds_by_stage:
        lines += ["", "## Seconds by stage", "",
                  "Added up over each stage's task runs, which overlap.", "",
                  "| " + " | ".join(t.seconds_by_stage) + " |",
                  "|" + "---:|" * len(t.seconds_by_stage),
                  "| " + " | ".join(f"{s:.2f}" for s in t.seconds_by_stage.values()) + " |"]
    if summary.interrupted:
        lines += ["", "**Interrupted (SIGTERM): files in flight finished, later files were not "
                      "started and nothing was pruned.**"]
    if summary.prune is not None and summary.prune.refused:
        lines += ["", f"**{summary.prune.refused}**"]
    problems = [row for row in file_rows(summary) if row["status"] in ("failed", "skipped")]
    if problems:
        lines += ["", "## Not indexed", "", "| file | status | reason | detail |", "|---|---|---|---|"]
        lines += [f"| {_cell(r['file'])} | {r['status']} | {r['reason']} | {_cell(r['detail'])} |"
                  for r in problems]
    return "\n".join(lines)


def publish_summary(summary: RunSummary) -> None:
    """Create the run's table and markdown artifacts (keyed by collection, so runs line up)."""
    key = artifact_key(summary.collection)
    create_table_artifact(summary_rows(summary), key=key,
                          description=f"Per-file outcomes of ingest run {summary.run_id}")
    create_markdown_artifact(summary_markdown(summary), key=f"{key}-totals",
                             description="Totals, seconds by stage, files not indexed")
