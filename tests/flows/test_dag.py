"""The run as the DAG it is, read back through the Prefect API: every group of files is a
``read → chunk → embed → store`` chain of task runs linked by their inputs (what the UI draws),
with per-stage timings, and a store fault retried re-runs the ``store`` task only."""

from __future__ import annotations

from collections import Counter

import pytest

from flows.ingest_flow import ingest_documents
from tasks.core.embedding import Embedder
from tasks.core.stages import read as read_module
from tests.conftest import MIXED
from tests.flows.test_ingest_flow import outcome_map, read_task_runs

pytestmark = pytest.mark.flow

CHAIN = ("read", "chunk", "embed", "store")
# The parameter of each stage that takes the previous stage's result.
UPSTREAM = {"chunk": "read", "embed": "chunked", "store": "embedded"}


def chains(task_runs) -> list[dict]:
    """Each group's task runs by stage, followed from its ``store`` back through the inputs."""
    by_id = {run.id: run for run in task_runs}
    found = []
    for store in (r for r in task_runs if r.task_key.startswith("store")):
        chain, run = {"store": store}, store
        for stage in ("embed", "chunk", "read"):
            downstream = CHAIN[CHAIN.index(stage) + 1]
            [upstream] = run.task_inputs[UPSTREAM[downstream]]  # exactly one edge, to the stage before
            run = chain[stage] = by_id[upstream.id]
            assert run.task_key.startswith(stage), (stage, run.name)
        found.append(chain)
    return found


@pytest.fixture()
def counted(monkeypatch):
    """Counts what reaches the model (texts per call) and the source (downloads per file)."""
    from tasks.core.resources import resources
    from tasks.core.settings import DEFAULT_MODEL

    # A process's first run also checks the query encoder it keeps against the model (its own
    # model calls, once per process): done here, so that only the run's calls are counted
    # whichever test this worker ran before.
    resources().keep_query_encoder(DEFAULT_MODEL)
    counts = {"embedded": Counter(), "fetched": Counter(), "calls": 0}
    embed, fetch = Embedder.embed_timed, read_module.fetch

    def counting_embed(self, texts, token_counts, **kwargs):
        counts["embedded"].update(texts)
        counts["calls"] += 1
        return embed(self, texts, token_counts, **kwargs)

    def counting_fetch(file, limit):
        counts["fetched"][file.name] += 1
        return fetch(file, limit)

    monkeypatch.setattr(Embedder, "embed_timed", counting_embed)
    monkeypatch.setattr(read_module, "fetch", counting_fetch)
    return counts


def test_groups_are_read_chunk_embed_store_chains_and_a_store_fault_reruns_only_store(
        ingest_env, flaky_store_writes, counted):
    flaky_store_writes["failures_left"] = 1  # the first write of heat-pumps.txt fails, once
    summary = ingest_documents(sources=[str(MIXED)], collection="dag")
    assert outcome_map(summary)["heat-pumps.txt"] == ("indexed", "ok")
    assert flaky_store_writes["attempts"] >= 2  # the failed write, then the retried ones

    task_runs = read_task_runs(summary.run_id)
    found = chains(task_runs)
    # 13 files in groups of 2, 4, 4, 3 (a small first group, then INGEST_FILES_PER_TASK): 4
    # complete chains, each file in one.
    assert len(found) == 4
    assert {r.id for chain in found for r in chain.values()} == {
        r.id for r in task_runs if r.task_key.split("-")[0] in CHAIN}
    names = [chain["read"].name for chain in found]
    assert sorted(int(name.split()[1]) for name in names if name.split()[1].isdigit()) == [2, 3, 4, 4]
    for chain in found:
        group = chain["read"].name.split(" ", 1)[1]  # "4 files: a.pdf, b.txt …" or one file's name
        for stage in CHAIN:
            run = chain[stage]
            assert run.state.is_completed(), (run.name, run.state)
            assert run.name == f"{stage} {group}"  # every stage names its stage and the same files
            assert run.start_time is not None and run.end_time is not None  # the timeline
        for before, after in zip(CHAIN, CHAIN[1:]):  # a stage starts once the one before ended
            assert chain[before].end_time <= chain[after].start_time

    # The store fault re-ran the store task of its group, and nothing else.
    retried = [r for r in task_runs if r.run_count > 1]
    assert [r.task_key.split("-")[0] for r in retried] == ["store"]
    assert retried[0].run_count == 2
    # Nothing was read or embedded twice: each file downloaded once, each chunk embedded once.
    assert counted["fetched"] and set(counted["fetched"].values()) == {1}
    # One model call per group (each has a file to index), none again for the retried store.
    assert sum(counted["embedded"].values()) == summary.totals.chunks_embedded
    assert counted["calls"] == len(found) == 4

    # Where the time went: every stage's seconds, in the summary and the totals artifact.
    assert set(summary.totals.seconds_by_stage) >= set(CHAIN) | {"prepare"}
