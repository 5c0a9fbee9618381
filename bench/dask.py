"""Dask overhead: the flow on 2 local Dask worker processes vs the default threads, same corpus.

    python -m bench.dask --files 100      (make bench-dask)

Both runs are warm (model loaded in this process and on every Dask worker by a first small run),
so the ratio is the steady-state cost of shipping groups to workers and points back; on 2 cores
no speed-up is expected (the model already uses both cores in one process). Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from bench.corpus import cached_corpus, isolated_run_environment

    isolated_run_environment("bench-dask-")
    from distributed import LocalCluster

    from apps.prefect_api import prefect_api_ready

    prefect_api_ready()
    from flows.ingest_flow import ingest_documents

    corpus = cached_corpus(args.files)
    warmup = str(next(corpus.rglob("*.txt")))

    def timed(collection: str) -> tuple[float, int]:
        ingest_documents(sources=[warmup], collection=f"{collection}-warmup")
        started = time.perf_counter()
        summary = ingest_documents(sources=[str(corpus)], collection=collection)
        return time.perf_counter() - started, summary.totals.chunks_embedded

    threads_s, chunks = timed("threads")
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster:
        os.environ["INGEST_DASK_ADDRESS"] = cluster.scheduler_address
        dask_s, dask_chunks = timed("dask")
        del os.environ["INGEST_DASK_ADDRESS"]
    assert dask_chunks == chunks, (dask_chunks, chunks)
    print(f"{args.files} files, {chunks} chunks")
    print(f"{'runner':<28}{'wall s':>9}{'chunks/s':>10}")
    print(f"{'threads (default)':<28}{threads_s:>9.1f}{chunks / threads_s:>10.1f}")
    print(f"{f'Dask, {args.workers} local workers':<28}{dask_s:>9.1f}{chunks / dask_s:>10.1f}")
    print(json.dumps({"files": args.files, "chunks": chunks, "threads_s": round(threads_s, 2),
                      "dask_s": round(dask_s, 2), "dask_vs_threads": round(threads_s / dask_s, 3)}))


if __name__ == "__main__":
    main()
