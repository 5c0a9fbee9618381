"""The same flow on a Dask cluster (2 worker processes on 127.0.0.1): the same points, IDs and
outcomes as a local run, and the model loaded at most once per worker process."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import (
    MIXED,
    MIXED_EXPECTED,
    assert_same_store,
    close_stores,
    make_config,
    run_all,
    snapshot,
)
from tests.flows.test_reruns_real_processes import SCRIPT, stored_now

pytestmark = [pytest.mark.flow, pytest.mark.dask, pytest.mark.once]


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        yield cluster, client


def _model_loads(client) -> dict:
    def loads() -> int:
        from tasks.core.resources import resources

        return resources().model_loads

    return client.run(loads)


def test_dask_run_equals_the_local_run(cluster, served_env, tmp_path):
    scheduler, client = cluster
    env = {**served_env, "INGEST_FILES_PER_TASK": "3"}
    done = subprocess.run([str(SCRIPT), "run", str(MIXED), "--dask-address", scheduler.scheduler_address,
                           "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    outcomes = {f["source"].rsplit("/", 1)[-1]: (f["status"], f["reason"]) for f in json.loads(done.stdout)["files"]}
    assert outcomes == MIXED_EXPECTED
    # The same chain on the cluster: every stage ran (read/chunk/embed there, store here).
    assert set(json.loads(done.stdout)["totals"]["seconds_by_stage"]) >= {"read", "chunk", "embed", "store"}
    loads = _model_loads(client)
    assert len(loads) == 2 and all(n <= 1 for n in loads.values()) and sum(loads.values()) >= 1

    close_stores()
    reference = make_config(tmp_path / "reference").model_copy(update={"collection": "documents"})
    run_all(reference, [str(MIXED)])
    expected = snapshot(reference)
    close_stores()
    assert_same_store(stored_now(env), expected)

    # A re-run on Dask finds everything unchanged, without loading the model again.
    again = subprocess.run([str(SCRIPT), "run", str(MIXED), "--dask-address", scheduler.scheduler_address,
                            "--json"], env=env, capture_output=True, text=True, timeout=300)
    statuses = {f["status"] for f in json.loads(again.stdout)["files"]}
    assert "indexed" not in statuses and "unchanged" in statuses
    assert _model_loads(client) == loads


def test_dask_choice_is_validated_before_the_run(cli_env):
    done = subprocess.run([str(SCRIPT), "run", str(MIXED), "--dask-address", "tcp://127.0.0.1:1",
                           "--dask-workers", "2"], env=cli_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "choose one" in done.stderr
