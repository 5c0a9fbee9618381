"""The ingest flow through Prefect: outcomes, artifacts, retries, search, run-level failures."""

from __future__ import annotations

import json
import os

import pytest

from flows.ingest_flow import ingest_documents
from flows.report import artifact_key
from tasks.core.errors import SourceUnavailableError, StoreUnavailableError
from tasks.core.models import Status
from tasks.core.resources import resources
from tasks.core.search import search
from tasks.core.settings import IngestParams, IngestSettings, PipelineConfig
from tasks.core.stages import read as read_module
from tests.conftest import MIXED, MIXED_EXPECTED, free_port, niceness, upload_folder, wait_until

pytestmark = [pytest.mark.flow, pytest.mark.store]


def outcome_map(summary):
    return {o.source.rsplit("/", 1)[-1]: (o.status.value, o.reason.value) for o in summary.files}


def read_task_runs(flow_run_id):
    """The flow run's task runs once each reads back in a final state: Prefect records states in
    the background, and on a busy machine the last ones land after the flow has returned."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        def settled():
            only_this_run = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            runs = client.read_task_runs(flow_run_filter=only_this_run)
            return runs if runs and all(r.state and r.state.is_final() for r in runs) else None
        return wait_until(settled, timeout=300, what="every task run recorded in a final state")


def read_artifacts(flow_run_id, kind):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterType,
    )

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            type=ArtifactFilterType(any_=[kind])))


def test_mixed_batch_outcomes_artifacts_and_search(ingest_env):
    from prefect.artifacts import Artifact

    summary = ingest_documents(sources=[str(MIXED)], collection="mixed")
    assert outcome_map(summary) == MIXED_EXPECTED
    t = summary.totals
    assert (t.files, t.indexed, t.failed, t.skipped) == (13, 6, 4, 3)

    table = Artifact.get(artifact_key("mixed"))
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert {r["file"]: (r["status"], r["reason"]) for r in rows} == MIXED_EXPECTED
    assert list(rows[0])[0] == "file" and all(r["source"].endswith("/" + r["file"]) for r in rows)
    assert str(table.flow_run_id) == summary.run_id
    totals = Artifact.get(f"{artifact_key('mixed')}-totals")
    assert "| 13 | 6 | 0 | 0 | 3 | 4 | 0 |" in totals.data and "encrypted" in totals.data
    assert "## Seconds by stage" in totals.data
    assert "Embedding runtime: `fp32` — INGEST_EMBED_PRECISION=fp32." in totals.data
    assert set(t.seconds_by_stage) >= {"prepare", "read", "chunk", "embed", "store"}
    assert all(seconds >= 0 for seconds in t.seconds_by_stage.values())

    [progress] = read_artifacts(summary.run_id, "progress")
    assert progress.data == 100.0

    # Every thread that read, chunked, embedded and stored ran at the process's own priority
    # (niced feeders starved beside other busy programs; tasks.core.scheduling).
    own = niceness("/proc/self/stat")
    assert {niceness(f"/proc/self/task/{tid}/stat") for tid in os.listdir("/proc/self/task")} == {own}

    # 13 files in groups of 2, 4, 4 and 3 (the first group small, then INGEST_FILES_PER_TASK): a
    # chain of 4 task runs per group, plus the collection check and the store's maintenance; not
    # one task run per file.
    names = sorted(r.name for r in read_task_runs(summary.run_id))
    assert len(names) == 4 * 4 + 2
    for verb in ("read", "chunk", "embed", "store"):
        assert sum(n.startswith(f"{verb} ") for n in names) == 4
    assert "read 2 files: alpine-lakes.pdf, binary.txt" in names

    config = PipelineConfig.build(IngestSettings(), IngestParams(sources=["."], collection="mixed"))
    [hit] = search("why is glacier lake water turquoise? rock flour", config, resources(), limit=1)
    assert hit.file_name == "alpine-lakes.pdf" and hit.page_start <= 2 <= hit.page_end

    again = ingest_documents(sources=[str(MIXED)], collection="mixed")
    assert again.totals.unchanged == 6 and again.totals.indexed == 0
    unchanged = {o.source.rsplit("/", 1)[-1]: o for o in again.files}["alpine-lakes.pdf"]
    assert (unchanged.pages, unchanged.chunks) == (4, 4)


def test_transient_fault_is_retried_by_prefect_for_that_file_only(ingest_env, monkeypatch):
    original = read_module.fetch
    calls: dict[str, int] = {}

    def flaky_read(file, limit):
        calls[file.name] = calls.get(file.name, 0) + 1
        if file.name == "heat-pumps.txt" and calls[file.name] == 1:
            raise SourceUnavailableError("connection reset by peer")
        return original(file, limit)

    monkeypatch.setattr(read_module, "fetch", flaky_read)
    summary = ingest_documents(sources=[str(MIXED)], include=["*.txt"], collection="flaky")
    assert outcome_map(summary)["heat-pumps.txt"] == ("indexed", "ok")
    assert calls["heat-pumps.txt"] == 2
    assert all(n == 1 for name, n in calls.items() if name != "heat-pumps.txt")
    runs = {r.name: r for r in read_task_runs(summary.run_id)}
    retried = [r for r in runs.values() if r.run_count == 2]
    assert len(retried) == 1 and retried[0].state.is_completed()
    assert retried[0].name.startswith("read ")


def test_exhausted_retries_fail_one_file_not_the_batch(ingest_env, monkeypatch):
    monkeypatch.setenv("INGEST_RETRIES", "2")
    original = read_module.fetch

    def broken_for_one(file, limit):
        if file.name == "heat-pumps.txt":
            raise SourceUnavailableError("endpoint timed out")
        return original(file, limit)

    monkeypatch.setattr(read_module, "fetch", broken_for_one)
    summary = ingest_documents(sources=[str(MIXED)], include=["*.txt"], collection="down")
    outcomes = {o.source.rsplit("/", 1)[-1]: o for o in summary.files}
    assert (outcomes["heat-pumps.txt"].status, outcomes["heat-pumps.txt"].reason.value) == (
        Status.FAILED, "source_unavailable")
    assert "gave up after retries" in outcomes["heat-pumps.txt"].detail
    assert outcomes["cafe-cp1252.txt"].status is Status.INDEXED
    assert max(r.run_count for r in read_task_runs(summary.run_id)) == 3


def test_s3_prefix_through_the_flow(ingest_env, s3_bucket):
    upload_folder(s3_bucket, "incoming", MIXED)
    summary = ingest_documents(sources=[f"s3://{s3_bucket}/incoming/"], collection="s3docs")
    assert outcome_map(summary) == MIXED_EXPECTED
    assert all(o.source.startswith(f"s3://{s3_bucket}/incoming/") for o in summary.files)


def test_unreachable_store_fails_the_run_before_any_file(monkeypatch):
    monkeypatch.setenv("QDRANT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("INGEST_RETRIES", "1")
    monkeypatch.setenv("INGEST_RETRY_BACKOFF_S", "0")
    with pytest.raises(StoreUnavailableError):
        ingest_documents(sources=[str(MIXED)], collection="nowhere")


def test_prune_through_the_flow_reports_deleted_rows_and_refusals(ingest_env, tmp_path):
    import shutil

    from tests.conftest import SAMPLES

    folder = tmp_path / "docs"
    shutil.copytree(SAMPLES, folder)
    first = ingest_documents(sources=[str(folder)], collection="pruned")
    assert first.prune is None
    (folder / "heat-pumps.txt").unlink()
    summary = ingest_documents(sources=[str(folder)], collection="pruned", prune=True)
    assert outcome_map(summary)["heat-pumps.txt"] == ("deleted", "not_in_source")
    assert summary.totals.deleted == 1 and summary.prune.deleted == 1
    for name in ("alpine-lakes-field-guide.pdf", "sourdough-handbook.pdf"):
        (folder / name).unlink()
    refused = ingest_documents(sources=[str(folder)], collection="pruned", prune=True)
    assert refused.prune.refused and "2 of 3" in refused.prune.refused
    assert refused.totals.deleted == 0
    from prefect.artifacts import Artifact

    assert "prune refused" in Artifact.get(f"{artifact_key('pruned')}-totals").data
    forced = ingest_documents(sources=[str(folder)], collection="pruned", prune=True,
                                           force_prune=True)
    assert forced.totals.deleted == 2


def test_a_store_blip_is_retried_and_the_file_indexed(ingest_env, flaky_store_writes):
    flaky_store_writes["failures_left"] = 2
    summary = ingest_documents(sources=[str(MIXED)], include=["*.txt"], collection="blip")
    assert outcome_map(summary)["heat-pumps.txt"] == ("indexed", "ok")
    assert max(r.run_count for r in read_task_runs(summary.run_id)) == 3
    assert all(status in ("indexed", "failed", "skipped") for status, _ in outcome_map(summary).values())


def test_a_store_outage_beyond_retries_fails_the_file_and_the_next_run_indexes_it(
        ingest_env, flaky_store_writes, monkeypatch):
    monkeypatch.setenv("INGEST_RETRIES", "1")
    flaky_store_writes["failures_left"] = -1  # down for good
    params = dict(sources=[str(MIXED)], include=["*.txt"], collection="outage")
    first = outcome_map(ingest_documents(**params))
    assert first["heat-pumps.txt"] == ("failed", "store_unavailable")
    assert first["cafe-cp1252.txt"] == ("indexed", "ok")
    flaky_store_writes["failures_left"] = 0  # the store is back
    second = outcome_map(ingest_documents(**params))
    assert second["heat-pumps.txt"] == ("indexed", "ok")
    assert second["cafe-cp1252.txt"] == ("unchanged", "unchanged")
