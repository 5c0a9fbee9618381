"""PDFs are parsed in worker processes under a time and a memory limit: a slow, a huge and a
crashing parse each cost their own file only, and the rest of the batch is indexed."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import MIXED, make_config, niceness, run_all, wait_until
from tests.data.generate import operator_flood_pdf

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def batch(tmp_path):
    """Two good files and a hostile PDF (100,000 operators: ~3 s and ~140 MB in pypdf)."""
    folder = tmp_path / "batch"
    folder.mkdir()
    shutil.copy(MIXED / "alpine-lakes.pdf", folder / "a-lakes.pdf")
    shutil.copy(MIXED / "heat-pumps.txt", folder / "c-heat.txt")
    (folder / "b-flood.pdf").write_bytes(operator_flood_pdf(100_000))
    return folder


@pytest.fixture(autouse=True)
def _fresh_pools():
    from tasks.core.resources import resources

    yield
    resources().close()  # the parse pool (and stores): the next test starts its own


def _statuses(outcomes: dict) -> dict:
    return {name: (o.status.value, o.reason.value) for name, o in outcomes.items()}


def test_a_parse_past_the_time_limit_is_abandoned(store_path, batch):
    # The limit counts the parse's CPU seconds (~3 for the flood, milliseconds for the guide),
    # so it holds however busy the machine is; a worker starved of CPU altogether meets the
    # wall-clock backstop instead (seen with two CPU hogs and a second test worker).
    config = make_config(store_path).model_copy(update={"parse_timeout_s": 1.0})
    outcomes = run_all(config, [str(batch)])
    assert _statuses(outcomes) == {"a-lakes.pdf": ("indexed", "ok"), "b-flood.pdf": ("failed", "timeout"),
                                   "c-heat.txt": ("indexed", "ok")}
    assert "INGEST_PARSE_TIMEOUT" in outcomes["b-flood.pdf"].detail
    # The killed worker was replaced: the next PDF parses.
    outcomes = run_all(config.model_copy(update={"overwrite": True}), [str(batch / "a-lakes.pdf")])
    assert _statuses(outcomes) == {"a-lakes.pdf": ("updated", "ok")}


def test_a_parse_workers_imports_leave_numpy_out():
    """A worker's address space is capped (``INGEST_PARSE_MEMORY_MB``) from what it imported:
    numpy with OpenBLAS alone maps ~125 MB, and once a record module imported it, a worker
    under a small cap could not even load the ``mmap`` module to start a parse."""
    code = "import sys, pypdf, tasks.core.isolation, tasks.core.readers; print('numpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_a_parse_past_the_memory_limit_is_abandoned(store_path, batch):
    # A CPU limit the flood cannot reach: the memory limit decides.
    config = make_config(store_path).model_copy(update={"parse_memory_mb": 128, "parse_timeout_s": 600.0})
    outcomes = run_all(config, [str(batch)])
    assert _statuses(outcomes) == {"a-lakes.pdf": ("indexed", "ok"), "b-flood.pdf": ("failed", "too_large"),
                                   "c-heat.txt": ("indexed", "ok")}
    assert "INGEST_PARSE_MEMORY_MB" in outcomes["b-flood.pdf"].detail


def test_a_killed_parser_costs_its_own_file_only(store_path, batch):
    config = make_config(store_path).model_copy(update={"parse_workers": 1, "parse_timeout_s": 600.0})

    def kill_the_busy_worker() -> None:
        # The hostile PDF keeps the only worker busy for ~3 s of CPU: kill it in the middle
        # (on a busy machine that takes longer than 3 s).
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            time.sleep(0.1)
            for child in multiprocessing.active_children():
                stat = open(f"/proc/{child.pid}/stat").read().split()
                if float(stat[13]) / os.sysconf("SC_CLK_TCK") > 1.5:  # >1.5 s of CPU: the flood
                    os.kill(child.pid, signal.SIGKILL)
                    return

    killer = threading.Thread(target=kill_the_busy_worker)
    killer.start()
    outcomes = run_all(config, [str(batch)])
    killer.join()
    assert _statuses(outcomes) == {"a-lakes.pdf": ("indexed", "ok"),
                                   "b-flood.pdf": ("failed", "parser_crashed"),
                                   "c-heat.txt": ("indexed", "ok")}
    assert "SIGKILL" in outcomes["b-flood.pdf"].detail


def test_a_worker_killed_while_idle_does_not_break_later_parses():
    # pebble takes an idle worker's death (the OOM killer, an operator) for a broken pool and
    # refuses all later work: in a long-lived API, every later PDF would fail.
    from tasks.core.errors import FileRejected
    from tasks.core.isolation import ParsePool

    before = {child.pid for child in multiprocessing.active_children()}
    pool = ParsePool(workers=2, timeout_s=600.0, memory_mb=1024)
    try:
        guide = (MIXED / "alpine-lakes.pdf").read_bytes()
        first = pool.read_pdf(guide, max_pages=100)
        workers = [c for c in multiprocessing.active_children()
                   if c.name == "pebble_pool_worker" and c.pid not in before]
        assert len(workers) == 2
        os.kill(workers[0].pid, signal.SIGKILL)
        wait_until(lambda: not pool.healthy, timeout=300, what="pebble to see the worker die")

        assert pool.read_pdf(guide, max_pages=100).pages == first.pages  # on a new pool
        assert pool.restarts == 1 and pool.healthy
        with pytest.raises(FileRejected) as rejected:
            pool.read_pdf((MIXED / "corrupt.pdf").read_bytes(), max_pages=100)
        assert rejected.value.reason.value == "corrupt"
    finally:
        pool.close()


def test_parse_workers_run_at_the_priority_of_the_thread_that_started_them():
    # Niced workers (once nice 10 on top of a niced thread: 19) starved beside other busy
    # programs: a one-page OCR took 307 s against 7 s at normal priority.
    from tasks.core.isolation import ParsePool

    before = {child.pid for child in multiprocessing.active_children()}
    pool = ParsePool(workers=2, timeout_s=600.0, memory_mb=1024)
    try:
        assert pool.read_pdf((MIXED / "alpine-lakes.pdf").read_bytes(), max_pages=100).pages
        workers = [c.pid for c in multiprocessing.active_children()
                   if c.name == "pebble_pool_worker" and c.pid not in before]
        assert len(workers) == 2
        assert {niceness(f"/proc/{pid}/stat") for pid in workers} == {niceness("/proc/self/stat")}
    finally:
        pool.close()


def test_busy_counts_the_workers_at_work_not_the_files_waiting():
    from tasks.core.isolation import ParsePool

    pool = ParsePool(workers=2, timeout_s=600.0, memory_mb=1024)
    flood = operator_flood_pdf(50_000)  # ~1.5 s of pypdf each
    parsed: list = []
    try:
        assert pool.busy == 0
        threads = [threading.Thread(target=lambda: parsed.append(pool.read_pdf(flood, max_pages=10)))
                   for _ in range(3)]
        for thread in threads:
            thread.start()
        # Three files in flight on two workers: two busy until only one file is left.
        wait_until(lambda: pool.busy == 2, timeout=300, interval=0.01, what="two busy workers")
        for thread in threads:
            thread.join(600)
        assert len(parsed) == 3 and pool.busy == 0
    finally:
        pool.close()


def test_the_model_gives_up_a_core_while_a_pdf_is_parsed(store_path, embedder):
    # torch's threads meet at a barrier after every operator: beside a parse worker on one of
    # two cores they waited there for each other's turn (``scheduling``), so each model batch
    # runs on one thread fewer while a worker of this process parses.
    import numpy as np
    import torch

    from tasks.core.errors import FileRejected
    from tasks.core.resources import resources

    most, thread = embedder.loaded.threads, embedder.loaded.thread
    if most < 2:
        pytest.skip("torch has one thread here: there is no core to give up")
    texts = ["rock flour scatters blue light", "heat pumps in winter", "glacial lakes"]
    counts = [len(embedder.tokenizer.encode(t, add_special_tokens=False).ids) for t in texts]
    alone = embedder.embed(texts, counts, batch_size=2)
    assert thread.run(torch.get_num_threads) == most

    parse = resources().parse_pdf(make_config(store_path))
    done = threading.Event()

    def parse_flood():
        try:
            parse(operator_flood_pdf(200_000), max_pages=10)  # ~6 s of pypdf
        except FileRejected:
            pass
        finally:
            done.set()

    threading.Thread(target=parse_flood, daemon=True).start()
    wait_until(lambda: thread.threads(most) == most - 1 or done.is_set(), timeout=300,
               interval=0.01, what="the parse to start")
    beside = embedder.embed(texts, counts, batch_size=2)
    used = thread.run(torch.get_num_threads)
    # Busy before the embedding and after it: the one parse was in progress throughout.
    assert thread.threads(most) == most - 1, "the parse ended before three short texts were embedded"
    assert used == most - 1
    assert done.wait(600)
    after = embedder.embed(texts, counts, batch_size=2)
    assert thread.run(torch.get_num_threads) == most  # the core is taken back at the next batch
    assert np.allclose(beside, alone, atol=1e-5) and np.allclose(after, alone, atol=1e-5)


def test_pdfs_parse_under_a_temporary_folder_too_long_for_a_socket(tmp_path):
    # Python < 3.14 binds the forkserver's socket inside TMPDIR: past 75 bytes no worker could
    # start and every PDF failed (a test's TMPDIR under pytest-xdist is ~77). A fresh process:
    # multiprocessing chooses its folder once per process.
    long_tmp = tmp_path / ("t" * max(1, 80 - len(str(tmp_path))))
    long_tmp.mkdir()
    assert len(str(long_tmp)) >= 80
    script = (
        "from pathlib import Path\n"
        "from tasks.core.isolation import ParsePool\n"
        "if __name__ == '__main__':\n"
        "    pool = ParsePool(workers=1, timeout_s=600.0, memory_mb=1024)\n"
        f"    doc = pool.read_pdf(Path({str(MIXED / 'alpine-lakes.pdf')!r}).read_bytes(), max_pages=100)\n"
        "    pool.close()\n"
        "    print('pages', len(doc.pages))\n")
    (tmp_path / "parse.py").write_text(script)
    done = subprocess.run([sys.executable, str(tmp_path / "parse.py")], capture_output=True,
                          text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "TMPDIR": str(long_tmp), "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["pages", "4"]
    assert not [p for p in long_tmp.rglob("*") if p.is_file()]  # the socket went elsewhere
