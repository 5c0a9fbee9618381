"""Re-runs with real processes: SIGKILL in the middle of a run, and two runs at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import assert_same_store, close_stores, make_config, run_all, snapshot

# Process-level behaviour (the run lock, a SIGKILL between writes): the same for both embedded
# backends, whose own crash safety is tested write step by write step in tests/integration.
pytestmark = [pytest.mark.flow, pytest.mark.once]
SCRIPT = Path(sys.executable).parent / "ingest"


def write_corpus(folder: Path, files: int = 10) -> Path:
    folder.mkdir(parents=True)
    for n in range(files):
        paragraphs = [f"Document {n}, part {p}. Alpine lake {n} lies in a cirque carved by ice; "
                      f"rock flour from glacier {p} turns its water turquoise in late summer, "
                      "while trout stocked decades ago feed near the inlet." for p in range(20)]
        (folder / f"doc-{n:02d}.txt").write_text("\n\n".join(paragraphs))
    return folder


def start_and_wait_for_indexed(args, env, count: int, timeout: float = 180):
    """Start ``ingest`` and return once ``count`` files have been reported indexed."""
    # Its own session, so a kill can take the whole tree (Prefect's temporary server too).
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    seen, deadline = 0, time.monotonic() + timeout
    while seen < count:
        line = process.stderr.readline()
        assert line or process.poll() is None, "ingest ended before indexing anything"
        seen += ": indexed" in line
        assert time.monotonic() < deadline, "no progress"
    return process


def reference_store(tmp_path: Path, corpus: Path) -> dict:
    close_stores()
    config = make_config(tmp_path / "reference")
    config = config.model_copy(update={"collection": "documents"})
    run_all(config, [str(corpus)])
    expected = snapshot(config)
    close_stores()
    return expected


@pytest.fixture()
def env(served_env):
    """One file per task run and one worker: the run advances file by file."""
    return {**served_env, "INGEST_FILES_PER_TASK": "1", "INGEST_WORKERS": "1"}


def stored_now(env) -> dict:
    config = make_config(Path(env["INGEST_QDRANT_PATH"])).model_copy(update={"collection": "documents"})
    try:
        return snapshot(config)
    finally:
        close_stores()


def test_sigkill_mid_run_then_rerun_equals_one_clean_run(tmp_path, env):
    corpus = write_corpus(tmp_path / "corpus")
    victim = start_and_wait_for_indexed([str(SCRIPT), "run", str(corpus), "--verbose"], env, count=3)
    os.killpg(victim.pid, signal.SIGKILL)  # the process and everything it started
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL

    rerun = subprocess.run([str(SCRIPT), "run", str(corpus), "--json"], env=env, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    statuses = [f["status"] for f in json.loads(rerun.stdout)["files"]]
    assert statuses.count("unchanged") >= 3 and set(statuses) <= {"unchanged", "indexed", "updated"}
    assert_same_store(stored_now(env), reference_store(tmp_path, corpus))


def test_a_second_run_on_the_embedded_store_fails_fast_and_the_first_completes(tmp_path, env):
    corpus = write_corpus(tmp_path / "corpus", files=6)
    first = start_and_wait_for_indexed([str(SCRIPT), "run", str(corpus), "--json", "--verbose"], env,
                                       count=1)
    # The first run is stopped (its process group) while it holds the store, so "fast"
    # needs no race: a second run that waited for the store would wait until its timeout. (The
    # test once raced a 30-file run against the second's start-up, 188 s on a quiet machine; a
    # wall-clock bound failed a busy one, where that start-up alone took 20 s.)
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        second = subprocess.run([str(SCRIPT), "run", str(corpus)], env=env, capture_output=True,
                                text=True, timeout=300)
        assert first.poll() is None
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert second.returncode == 1
    assert "in use by another process" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0
    assert {f["status"] for f in json.loads(out)["files"]} == {"indexed"}
    assert_same_store(stored_now(env), reference_store(tmp_path, corpus))
