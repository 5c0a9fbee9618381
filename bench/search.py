"""Query latency through ``GET /search`` on a large collection, warm process, real HTTP.

    python -m bench.search --chunks 20000      (make bench-search)

The collection: ``--chunks`` windows of the text files of ``bench/eval/docs`` (about 800
characters each), with their real BM25 vectors and random unit dense vectors (latency does not
depend on what the dense vectors mean, and embedding 20,000 chunks would take ~10 minutes
here); written to an embedded Qdrant Edge store and indexed as after a run (``maintain``).
Then ``ingest api`` (``uvicorn`` on 127.0.0.1) serves it, and the questions of
``bench/eval/questions.jsonl`` are asked over HTTP in each mode, after a warm-up: p50/p95 of
the full round trip (query embedding, both searches and the fusion, JSON). Before the server
starts, ``--cold`` rounds of ``ingest search`` as fresh processes on the same
collection, interleaved: hybrid from a fresh ``INGEST_CACHE_DIR`` (the first search after an
install that ran nothing: the model loads, and the query encoder is made and kept), hybrid with
the query encoder kept (every later search: no torch), and sparse (no model at all) — wall time
from the command to its exit and peak RSS, medians. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from bench.eval import DOCS, QUESTIONS, load_questions

WINDOW, DIMENSION = 800, 384


def windows(count: int) -> list[str]:
    """``count`` text windows over the corpus's text files (overlapping when it is short)."""
    texts = [" ".join(p.read_bytes().decode("utf-8", "replace").split())
             for p in sorted(DOCS.glob("*.txt"))]
    corpus = " ".join(texts)
    stride = max(1, (len(corpus) - WINDOW) // count)
    return [corpus[i * stride:i * stride + WINDOW] for i in range(count)]


def build(store_path: Path, collection: str, count: int) -> float:
    """The collection written as the pipeline writes it; returns seconds."""
    from tasks.core.settings import StoreLocation
    from tasks.core.sparse import Bm25Encoder
    from tasks.core.store import StoredPoint, open_store

    started = time.perf_counter()
    store = open_store(StoreLocation.embedded("edge", store_path))
    store.ensure_collection(collection, DIMENSION)
    rng = np.random.default_rng(7)
    encoder = Bm25Encoder()
    texts = windows(count)
    for begin in range(0, count, 1000):
        batch = texts[begin:begin + 1000]
        vectors = rng.normal(size=(len(batch), DIMENSION)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.upsert_points(collection, [
            StoredPoint(id=str(uuid.UUID(int=begin + i)), vector=v.tolist(),
                        payload={"source": f"file:///bench/{(begin + i) // 20}.txt",
                                 "file_name": f"{(begin + i) // 20}.txt", "chunk_index": (begin + i) % 20,
                                 "text": text, "page_start": None, "page_end": None},
                        sparse=sparse)
            for i, (text, v, sparse) in enumerate(zip(batch, vectors, encoder.documents(batch)))])
    store.maintain(collection)
    store.close()
    return time.perf_counter() - started


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(port: int):
    """``ingest api``'s app on 127.0.0.1:``port`` in a thread; returns the server."""
    import prefect.main  # noqa: F401  (as ``ingest api`` does: Prefect's logging set up first)
    import uvicorn

    from apps.api import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    return server


COLD_SIDES = ("first search (fresh cache)", "kept query encoder", "sparse (no model)")


# Runs the cold searches for this process: a child's peak RSS (``wait4``) counts the process it
# was forked from, so they are started by one that stays small.
_LAUNCHER = """
import json, sys
from bench.peers import timed_child
for line in sys.stdin:
    request = json.loads(line)
    print(json.dumps(timed_child(request["command"], request["env"])), flush=True)
"""


class Launcher:
    """A small process that runs commands for this one (``bench.peers.timed_child``)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", _LAUNCHER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True,
                                        cwd=Path(__file__).resolve().parent.parent)

    def run(self, command: list[str], env: dict) -> tuple[float, float, str]:
        self.process.stdin.write(json.dumps({"command": command, "env": env}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"{command[:3]} failed (its error is above)")
        wall, rss, _cpu, out = json.loads(line)
        return wall, rss, out

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def cold_searches(question: str, rounds: int, work: Path,
                  launcher: Launcher) -> dict[str, list[tuple[float, float]]]:
    """``ingest search`` from fresh processes, the sides of ``COLD_SIDES`` interleaved per round:
    (wall seconds, peak RSS MB) of each."""
    script = str(Path(sys.executable).parent / "ingest")
    command = [script, "search", question, "-k", "5", "--json"]
    kept = work / "cache-0"  # made by the first round's fresh search
    results: dict[str, list[tuple[float, float]]] = {side: [] for side in COLD_SIDES}
    for round_ in range(rounds):
        for side in COLD_SIDES:
            cache = work / f"cache-{round_}" if side == COLD_SIDES[0] else kept
            mode = ["--mode", "sparse"] if side == COLD_SIDES[2] else []
            wall, rss, out = launcher.run(command + mode, {**os.environ, "INGEST_CACHE_DIR": str(cache)})
            if not json.loads(out):
                raise SystemExit(f"{side}: no hits")
            results[side].append((wall, rss))
    return results


def cold_report(cold: dict[str, list[tuple[float, float]]], rounds: int) -> dict:
    """Prints ``cold_searches``' medians and the first search's ratio to the kept encoder's."""
    report = {}
    print(f"cold `ingest search` ({rounds} rounds, medians)")
    for side in COLD_SIDES:
        wall = statistics.median(w for w, _ in cold[side])
        rss = statistics.median(r for _, r in cold[side])
        print(f"{side:<28} {wall:6.2f} s  {rss:6.0f} MB")
        key = side.split(" (")[0].replace(" ", "_")
        report[f"cold_{key}_s"], report[f"cold_{key}_rss_mb"] = round(wall, 2), round(rss)
    ratios = [f / k for (f, _), (k, _) in zip(cold[COLD_SIDES[0]], cold[COLD_SIDES[1]])]
    report["cold_first_vs_kept"] = round(statistics.median(ratios), 2)
    print(f"first search / kept encoder: {report['cold_first_vs_kept']:.2f}x "
          f"({min(ratios):.2f}-{max(ratios):.2f})\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2, help="times each question is asked per mode")
    parser.add_argument("--cold", type=int, default=3,
                        help="rounds of cold `ingest search` processes (0: skip)")
    args = parser.parse_args()

    from bench.corpus import isolated_run_environment

    launcher = Launcher() if args.cold > 0 else None  # while this process is small
    workdir = isolated_run_environment("bench-search-")
    store_path = workdir / "store"
    os.environ.update({"INGEST_STORE": "edge", "INGEST_QDRANT_PATH": str(store_path),
                       "INGEST_COLLECTION": "latency"})
    build_s = build(store_path, "latency", args.chunks)
    print(f"collection: {args.chunks} chunks written and indexed in {build_s:.0f} s")
    report: dict = {"chunks": args.chunks, "build_s": round(build_s, 1)}
    questions = [q.text for q in load_questions(QUESTIONS)]
    if launcher is not None:
        report.update(cold_report(cold_searches(questions[0], args.cold, workdir, launcher), args.cold))
        launcher.close()

    import httpx

    port = free_port()
    server = serve(port)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    with httpx.Client(base_url=base, timeout=60) as client:
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the API did not become ready within 300 s")
            time.sleep(0.5)
        results = {}
        for mode in ("hybrid", "dense", "sparse"):
            for text in questions[:10]:  # warm-up: first-call costs are not a query's
                client.get("/search", params={"q": text, "k": 5, "mode": mode}).raise_for_status()
            latencies = []
            for _ in range(args.rounds):
                for text in questions:
                    started = time.perf_counter()
                    response = client.get("/search", params={"q": text, "k": 5, "mode": mode})
                    latencies.append((time.perf_counter() - started) * 1000)
                    response.raise_for_status()
            results[mode] = {"p50_ms": round(statistics.median(latencies), 1),
                             "p95_ms": round(statistics.quantiles(latencies, n=20)[-1], 1),
                             "queries": len(latencies)}
            print(f"{mode:<7} p50 {results[mode]['p50_ms']:>6} ms   p95 {results[mode]['p95_ms']:>6} ms"
                  f"   ({len(latencies)} queries)")
    server.should_exit = True
    print(json.dumps({**report, **results}))


if __name__ == "__main__":
    main()
