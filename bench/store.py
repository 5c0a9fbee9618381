"""Embedded stores at scale, side by side: Qdrant Edge vs qdrant-client local mode.

    python -m bench.store --points 100000          (make bench-store POINTS=100000)

For each backend: write N points (384-d unit vectors clustered around 1,000 topics, seeded;
payloads shaped like the pipeline's, ~800 characters of text), then, in a fresh child process so memory is that of one
store, measure the time to open it, the resident memory after opening, and the median latency
of searches through the pipeline's store API. Edge builds its index in pieces while the points
are written (whenever ``INGEST_EDGE_OPTIMIZE_THRESHOLD`` points wait); it is measured as written
and after the end-of-run ``maintain`` has indexed what still waited. Recall@10 of each search against exact numpy search is reported too.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 384
QUERIES = 200


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def vectors(count: int, seed: int) -> np.ndarray:
    """Unit vectors around 1,000 topics, like sentence embeddings of a corpus.

    Uniform random 384-d vectors would be the worst case for any graph index (no neighbour
    structure: Edge's HNSW measured recall@10 0.48 on 30k of them, 0.999 on clustered ones).
    """
    rng = np.random.default_rng(7)
    centers = unit(rng.normal(size=(1000, DIM)))
    rng = np.random.default_rng(seed)
    return unit(centers[rng.integers(0, len(centers), count)] + 0.08 * rng.normal(size=(count, DIM)))


def queries_near(data: np.ndarray, count: int) -> np.ndarray:
    """Queries close to documents, as real questions are to the passages that answer them."""
    rng = np.random.default_rng(2)
    return unit(data[rng.integers(0, len(data), count)] + 0.05 * rng.normal(size=(count, DIM)))


def location(kind: str, root: str):
    from tasks.core.settings import StoreLocation

    return StoreLocation.embedded(kind, root)


def build(kind: str, root: str, points: int) -> dict:
    """Write the points (and, for Edge, build the index); returns timings."""
    from tasks.core.ids import point_id
    from tasks.core.store import StoredPoint, open_store

    store = open_store(location(kind, root))
    store.ensure_collection("bench", DIM)
    data = vectors(points, seed=1)
    text = "Glaciers carve deep basins into the valley floor as they advance. " * 12
    started = time.perf_counter()
    for begin in range(0, points, 1000):
        batch = [StoredPoint(id=point_id(f"file:///doc-{i // 10}.txt", i % 10), vector=data[i].tolist(),
                             payload={"source": f"file:///doc-{i // 10}.txt", "chunk_index": i % 10,
                                      "text": text, "page_start": 1, "page_end": 1})
                 for i in range(begin, min(begin + 1000, points))]
        store.upsert_points("bench", batch)
    result = {"write_s": time.perf_counter() - started}
    store.close()
    return result


def measure(kind: str, root: str, points: int, optimize: bool) -> dict:
    """In this (fresh) process: open, memory, search latency and recall."""
    from tasks.core.store import open_store

    data = vectors(points, seed=1)
    queries = queries_near(data, QUERIES)
    exact = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    del data
    baseline = rss_mb()
    started = time.perf_counter()
    store = open_store(location(kind, root))
    assert store.count("bench") == points  # opening an embedded store happens on first use
    open_s = time.perf_counter() - started
    opened_mb = rss_mb() - baseline
    result = {"open_s": open_s, "rss_after_open_mb": opened_mb}
    if optimize:
        started = time.perf_counter()
        result["maintain"] = store.maintain("bench")
        result["optimize_s"] = time.perf_counter() - started
    latencies, hits = [], 0
    for query, truth in zip(queries, exact):
        started = time.perf_counter()
        found = store.search("bench", dense=query.tolist(), limit=10)
        latencies.append(time.perf_counter() - started)
        ids = {(h.payload["source"], h.payload["chunk_index"]) for h in found}
        hits += len(ids & {(f"file:///doc-{i // 10}.txt", int(i % 10)) for i in truth})
    result.update(search_median_ms=1000 * statistics.median(latencies),
                  search_p95_ms=1000 * sorted(latencies)[int(0.95 * len(latencies))],
                  recall_at_10=hits / (10 * QUERIES), rss_after_search_mb=rss_mb() - baseline)
    store.close()
    return result


def child(points: int, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.store", "--points", str(points), "--child", *args],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"bench child {args} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--child", nargs=4, metavar=("ACTION", "KIND", "ROOT", "OPTIMIZE"))
    args = parser.parse_args()
    if args.child:
        action, kind, root, optimize = args.child
        call = build if action == "build" else measure
        extra = () if action == "build" else (optimize == "1",)
        print(json.dumps(call(kind, root, args.points, *extra)))
        return

    rows = {}
    for kind in ("edge", "qdrant-local"):
        root = tempfile.mkdtemp(prefix=f"bench-store-{kind}-")
        built = child(args.points, "build", kind, root, "0")
        rows[kind] = {**built, **child(args.points, "measure", kind, root, "0")}
        if kind == "edge":
            indexed = child(args.points, "measure", kind, root, "1")  # indexes what waits, then searches
            rows["edge (maintained)"] = {"write_s": built["write_s"], **indexed}
            rows["edge (maintained, reopened)"] = {"write_s": built["write_s"], **child(args.points, "measure", kind, root, "0")}

    print(f"{args.points} points, {DIM}-d, {QUERIES} searches (k=10) through the store API")
    header = f"{'backend':<26}{'write s':>9}{'open s':>8}{'RSS open MB':>12}{'search ms p50':>14}{'p95':>7}{'recall@10':>10}"
    print(header)
    for name, r in rows.items():
        print(f"{name:<26}{r['write_s']:>9.1f}{r['open_s']:>8.2f}{r['rss_after_open_mb']:>12.0f}"
              f"{r['search_median_ms']:>14.2f}{r['search_p95_ms']:>7.2f}{r['recall_at_10']:>10.3f}")
    if "optimize_s" in rows.get("edge (maintained)", {}):
        print(f"edge maintain: {rows['edge (maintained)']['optimize_s']:.1f} s "
              f"({rows['edge (maintained)'].get('maintain') or 'nothing waited'})")
    edge, local = rows["edge (maintained, reopened)"], rows["qdrant-local"]
    print(json.dumps({"points": args.points, "edge_open_s": round(edge["open_s"], 3),
                      "edge_search_median_ms": round(edge["search_median_ms"], 2),
                      "edge_rss_after_open_mb": round(edge["rss_after_open_mb"]),
                      "local_open_s": round(local["open_s"], 3),
                      "local_search_median_ms": round(local["search_median_ms"], 2),
                      "local_rss_after_open_mb": round(local["rss_after_open_mb"]),
                      "open_ratio_local_vs_edge": round(local["open_s"] / edge["open_s"], 1),
                      "search_ratio_local_vs_edge": round(local["search_median_ms"] / edge["search_median_ms"], 1)}))


if __name__ == "__main__":
    main()
