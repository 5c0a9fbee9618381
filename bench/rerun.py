"""Re-run cost: the same flow twice over an unchanged corpus, side by side in one process.

    python -m bench.rerun --files 500          (make bench-rerun FILES=500)

Both runs go through the real flow (Prefect ephemeral mode, embedded Qdrant in a temporary
folder). A warm-up run on one file first starts Prefect's server and loads the model, so both
timed runs pay the same fixed costs. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3, help="timed re-runs (median reported)")
    args = parser.parse_args()

    from bench.corpus import cached_corpus, isolated_run_environment

    isolated_run_environment("bench-rerun-")
    from apps.prefect_api import prefect_api_ready
    from flows.ingest_flow import ingest_documents

    prefect_api_ready()
    corpus = cached_corpus(args.files)
    warmup = next(p for p in sorted(corpus.rglob("*.txt")))
    ingest_documents(sources=[str(warmup)], collection="warmup")

    def timed(collection: str):
        started = time.perf_counter()
        summary = ingest_documents(sources=[str(corpus)], collection=collection)
        return time.perf_counter() - started, summary

    first_s, first = timed("bench")
    reruns = [timed("bench") for _ in range(args.repeat)]
    rerun_s = statistics.median(s for s, _ in reruns)
    last = reruns[-1][1]

    print(f"{'run':<10}{'wall s':>10}{'files':>8}{'indexed':>9}{'unchanged':>11}{'chunks embedded':>17}")
    print(f"{'first':<10}{first_s:>10.2f}{first.totals.files:>8}{first.totals.indexed:>9}"
          f"{first.totals.unchanged:>11}{first.totals.chunks_embedded:>17}")
    for n, (seconds, summary) in enumerate(reruns, 1):
        print(f"{'re-run ' + str(n):<10}{seconds:>10.2f}{summary.totals.files:>8}"
              f"{summary.totals.indexed:>9}{summary.totals.unchanged:>11}{summary.totals.chunks_embedded:>17}")
    spread = (max(s for s, _ in reruns) - min(s for s, _ in reruns)) / rerun_s if rerun_s else 0
    print(f"re-run / first run (median of {args.repeat}): {rerun_s / first_s:.3%} "
          f"(re-runs spread ±{spread / 2:.0%})")
    print(json.dumps({"files": first.totals.files, "first_s": round(first_s, 2),
                      "rerun_s": round(rerun_s, 2), "rerun_ratio": round(rerun_s / first_s, 4),
                      "rerun_chunks_embedded": last.totals.chunks_embedded,
                      "rerun_unchanged": last.totals.unchanged}))


if __name__ == "__main__":
    main()
