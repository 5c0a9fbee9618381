"""Run reports: the summary table and markdown published as Prefect artifacts."""

from __future__ import annotations

import re

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.core.models import RunSummary


def artifact_key(collection: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    slug = re.sub(r"[^a-z0-9-]+", "-", collection.lower()).strip("-") or "default"
    return f"ingest-{slug}"


def summary_rows(summary: RunSummary) -> list[dict]:
    """One table row per file."""
    return [{"source": o.source, "status": o.status.value, "reason": o.reason.value,
             "pages": o.pages if o.pages is not None else "", "chunks": o.chunks,
             "seconds": o.seconds, "detail": o.detail} for o in summary.files]


def summary_markdown(summary: RunSummary) -> str:
    """Totals and throughput, for the run's markdown artifact."""
    t = summary.totals
    lines = [
        f"# Ingest run into `{summary.collection}`",
        "",
        "| files | indexed | updated | unchanged | skipped | failed | deleted | pages | chunks "
        "| seconds | chunks/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {t.files} | {t.indexed} | {t.updated} | {t.unchanged} | {t.skipped} | {t.failed} "
        f"| {t.deleted} | {t.pages} | {t.chunks} | {t.seconds} | {t.chunks_per_second} |",
    ]
    if summary.interrupted:
        lines += ["", "**Interrupted (SIGTERM): files in flight finished, later files were not "
                      "started and nothing was pruned.**"]
    if summary.prune is not None and summary.prune.refused:
        lines += ["", f"**{summary.prune.refused}**"]
    problems = [o for o in summary.files if o.status.value in ("failed", "skipped")]
    if problems:
        lines += ["", "## Not indexed", "", "| source | status | reason | detail |", "|---|---|---|---|"]
        lines += [f"| {o.source} | {o.status.value} | {o.reason.value} | {o.detail.replace('|', '/')} |"
                  for o in problems]
    return "\n".join(lines)


def publish_summary(summary: RunSummary) -> None:
    """Create the run's table and markdown artifacts (keyed by collection, so runs line up)."""
    key = artifact_key(summary.collection)
    create_table_artifact(summary_rows(summary), key=key,
                          description=f"Per-file outcomes of ingest run {summary.run_id}")
    create_markdown_artifact(summary_markdown(summary), key=f"{key}-totals",
                             description="Totals and throughput")
