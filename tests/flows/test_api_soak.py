"""Soak: the upload API under concurrent clients while both cores are busy.

Every core is kept busy by a CPU hog; ``ingest api`` is started fresh (its own Prefect server,
its own database); clients upload mixed batches at once — good files, a corrupt PDF, an
unsupported file, the same name twice in a request and the same name across clients. Nothing
may answer 5xx or reset a connection, every uploaded file gets exactly one result row (also
read back through ``GET /runs/{id}``), the store holds exactly the chunks its files report
with no duplicate IDs, nothing is written outside the folders given to the API, and no Prefect
server outlives it. Latency and throughput are printed (``-s``) for the closing note.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import MIXED, free_port, wait_until
from tests.flows.test_prefect_ownership import INGEST, prefect_servers

pytestmark = [pytest.mark.flow, pytest.mark.once, pytest.mark.soak]

CLIENTS, UPLOADS = 4, 3


@pytest.fixture()
def cpu_hogs():
    """One busy-looping process per core for the length of the test."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(os.cpu_count() or 2)]
    yield len(hogs)
    for hog in hogs:
        hog.kill()
        hog.wait()


def batch(client: int, number: int) -> list[tuple[str, bytes]]:
    """3-4 files: good text and PDF, a corrupt PDF, a name repeated in the request and one
    shared by every client (different content each time), and every other time a PNG."""
    files = [
        ("notes.txt", f"Client {client}, upload {number}: notes on glacial rock flour and the "
                      f"turquoise colour of alpine lakes. ".encode() * 20),
        (f"guide-{client}.pdf", (MIXED / "alpine-lakes.pdf").read_bytes()),
        (f"report-{client}.txt", f"Upload {number}: heat pump efficiency. ".encode() * 30),
        (f"report-{client}.txt", (MIXED / "cafe-cp1252.txt").read_bytes()),
        (f"broken-{client}.pdf", (MIXED / "corrupt.pdf").read_bytes()),
    ]
    if number % 2:
        files.append((f"picture-{client}.png", (MIXED / "picture.png").read_bytes()))
    return files


def unexpected_errors(log: Path) -> str:
    """The API log's tracebacks of unexpected per-file errors (what a wrong reason hides)."""
    text = log.read_text(errors="replace")
    return "".join("\n" + part[:6000] for part in text.split("unexpected error on ")[1:])


def test_concurrent_uploads_on_a_busy_machine(cli_env, tmp_path, cpu_hogs, store_backend):
    work, landing, temp = tmp_path / "cwd", tmp_path / "landing", tmp_path / "tmp"
    for folder in (work, temp):
        folder.mkdir()
    env = {**cli_env, "INGEST_LANDING": str(landing), "TMPDIR": str(temp),
           "INGEST_QDRANT_PATH": str(tmp_path / "store")}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "api.log", "w")
    started = time.monotonic()
    api = subprocess.Popen([INGEST, "api", "--port", str(port)], env=env, cwd=work, stdout=log,
                           stderr=subprocess.STDOUT, start_new_session=True)

    def ready() -> bool:
        assert api.poll() is None, (tmp_path / "api.log").read_text()
        try:
            return httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        except httpx.TransportError:
            return False

    results: list[tuple[list[tuple[str, bytes]], httpx.Response, float]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        with httpx.Client(base_url=base, timeout=600) as http:  # one keep-alive connection
            for upload in range(UPLOADS):
                files = batch(number, upload)
                began = time.monotonic()
                try:
                    reply = http.post("/batch", files=[("files", (n, b, "application/octet-stream"))
                                                       for n, b in files])
                except httpx.TransportError as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with lock:
                    results.append((files, reply, time.monotonic() - began))

    try:
        wait_until(ready, timeout=600, what="the API to be ready")
        ready_s = time.monotonic() - started
        assert len(prefect_servers(api.pid)) == 1
        load_started = time.monotonic()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=1200)
        load_s = time.monotonic() - load_started

        assert not errors, errors  # no connection resets, no broken responses
        statuses = collections.Counter(reply.status_code for _, reply, _ in results)
        assert statuses == {200: CLIENTS * UPLOADS}, statuses
        for files, reply, _ in results:
            rows = reply.json()["results"]
            assert sorted(r["file"] for r in rows) == sorted(n for n, _ in files)  # one row each
            assert len({r["stored_as"] for r in rows}) == len(files)
            broken = [r for r in rows if r["file"].startswith("broken-")]
            assert {r["reason"] for r in broken} == {"corrupt"}, \
                json.dumps(broken) + unexpected_errors(tmp_path / "api.log")
            assert {r["reason"] for r in rows if r["file"].endswith(".png")} <= {"unsupported_type"}
            assert {r["status"] for r in rows if r["file"].startswith("guide-")} <= \
                {"indexed", "updated", "unchanged"}, \
                json.dumps(rows) + unexpected_errors(tmp_path / "api.log")
            again = httpx.get(f"{base}/runs/{reply.json()['run_id']}", timeout=60).json()
            assert again["state"] == "COMPLETED"
            assert sorted((r["file"], r["stored_as"], r["status"]) for r in again["results"]) == \
                sorted((r["file"], r["stored_as"], r["status"]) for r in rows)
        assert len(prefect_servers(api.pid)) == 1  # no request started another
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(timeout=120)
    wait_until(lambda: not prefect_servers(api.pid), timeout=60, what="the Prefect server to stop")

    from tasks.core.payload import CHUNK_COUNT, SOURCE
    from tasks.core.settings import StoreLocation
    from tasks.core.sources import display_name
    from tasks.core.store import open_store

    store = open_store(StoreLocation.embedded(store_backend, tmp_path / "store"))
    try:
        points = list(store.iter_points("documents"))
    finally:
        store.close()
    assert len({p.id for p in points}) == len(points)  # no duplicate IDs
    by_source = collections.Counter(p.payload[SOURCE] for p in points)
    for point in points:  # every file holds exactly the chunks it says it has
        assert by_source[point.payload[SOURCE]] == point.payload[CHUNK_COUNT], point.payload[SOURCE]
    landed = {p.name for p in landing.iterdir()}
    assert {display_name(source) for source in by_source} <= landed
    assert not any(name.startswith(".") for name in landed)  # no half-written upload
    # Nothing written elsewhere: no file in the working folder, no spooled upload left in the
    # temporary folder (which holds only empty folders and sockets of torch and multiprocessing;
    # under pytest-xdist this TMPDIR is too long for a socket, and the parse workers' forkserver
    # binds its socket in a folder of /tmp instead: tasks.core.isolation._fit_socket_dir).
    assert not any(work.iterdir())
    assert not [p for p in temp.rglob("*") if p.is_file() and not p.is_socket()]

    # A parse pool that broke is replaced (the file parsed again): seen, not failed on.
    restarts = (tmp_path / "api.log").read_text(errors="replace").count("parse workers broke")
    latencies = sorted(seconds for _, _, seconds in results)
    files = sum(len(f) for f, _, _ in results)
    print(f"\nsoak: {CLIENTS} clients x {UPLOADS} uploads ({files} files) with {cpu_hogs} CPU hogs; "
          f"ready after {ready_s:.1f}s; latency p50 {statistics.median(latencies):.1f}s, "
          f"p95 {latencies[int(0.95 * (len(latencies) - 1))]:.1f}s, max {latencies[-1]:.1f}s; "
          f"{len(results) / load_s * 60:.1f} uploads/min, {files / load_s:.2f} files/s; "
          f"parse pools replaced: {restarts}")
