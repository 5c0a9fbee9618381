"""Throughput, side by side in one process: the padding-free encode limit, plain encode, the
pipeline (the real flow), and a seed-style sequential baseline, on the same corpus.

    python -m bench.throughput --files 300        (make bench FILES=300)
    python -m bench.throughput --folder DIR       (any folder of PDFs and .txt files)

1. limit  — ``model.encode`` of exactly the chunks the pipeline produces, ordered by token count
            and encoded batch by batch, so batches carry (almost) no padding;
2. plain  — ``model.encode`` of the same chunks in their natural order, one call;
3. pipeline — ``ingest_documents`` end to end (Prefect ephemeral mode, embedded Edge store);
            ``backlog_s``: seconds after the flow returns until Prefect has recorded every task run;
            then again with ``INGEST_EMBED_PRECISION=bf16`` (``fast_vs_fp32_pipeline``), and the
            cosine of bf16 to fp32 vectors of the same chunks;
4. seed   — per file, sequentially: read, chunk, encode that file's chunks, upsert that file (what
            a naive upload router does), same model, chunker and store backend.

Ratios > 1 mean faster. The last line is JSON. Peak RSS is the process's peak after each step;
``rss_ratio_10x`` compares the flow alone, in fresh processes, on N/10 and N files.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def produce_chunks(corpus: Path, config) -> tuple[list[str], list[int], int]:
    """The pipeline's own chunks for every file of the corpus (readers + chunker)."""
    from tasks.core.errors import FileRejected
    from tasks.core.process import processor_for
    from tasks.core.readers import read_document
    from tasks.core.sources import discover_files, read_bytes

    chunker = processor_for(config).chunker
    texts, counts, files = [], [], 0
    for file in discover_files([str(corpus)]):
        files += 1
        try:
            document = read_document(read_bytes(file), file.name, max_pages=config.max_pages)
        except FileRejected:
            continue
        for chunk in chunker.chunk_document(document):
            texts.append(chunk.text)
            counts.append(chunk.token_count)
    return texts, counts, files


def wait_for_backlog(flow_run_id: str, timeout: float = 300) -> float:
    """Seconds until every task run of the flow run reads back from the API in a final state."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    started = time.perf_counter()
    with get_client(sync_client=True) as client:
        while time.perf_counter() - started < timeout:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            if runs and all(r.state and r.state.is_final() for r in runs):
                return time.perf_counter() - started
            time.sleep(0.2)
    return float("inf")


def seed_baseline(corpus: Path, config) -> tuple[float, int]:
    """Per file, one after another: read, chunk, encode, upsert. Returns (seconds, chunks)."""
    from tasks.core.errors import FileRejected
    from tasks.core.ids import point_id
    from tasks.core.process import processor_for
    from tasks.core.readers import read_document
    from tasks.core.sources import discover_files, read_bytes
    from tasks.core.store import StoredPoint

    processor = processor_for(config)
    processor.store.ensure_collection(config.collection, processor.embedder.dimension)
    started, chunks = time.perf_counter(), 0
    for file in discover_files([str(corpus)]):
        try:
            document = read_document(read_bytes(file), file.name, max_pages=config.max_pages)
        except FileRejected:
            continue
        pieces = processor.chunker.chunk_document(document)
        vectors = processor.embedder.model.encode([c.text for c in pieces], batch_size=32,
                                                  normalize_embeddings=True)
        processor.store.upsert_points(config.collection, [
            StoredPoint(id=point_id(file.uri, c.chunk_index), vector=v.tolist(),
                        payload={"source": file.uri, "chunk_index": c.chunk_index, "text": c.text})
            for c, v in zip(pieces, vectors)])
        chunks += len(pieces)
    return time.perf_counter() - started, chunks


def pipeline_child(files: int, precision: str) -> dict:
    """Run only the flow on the cached corpus of ``files`` in a fresh process; its peak RSS."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "INGEST_EMBED_PRECISION": precision}
    env.pop("INGEST_QDRANT_PATH", None)
    run = subprocess.run([sys.executable, "-m", "bench.throughput", "--pipeline-only", "--files", str(files)],
                         env=env, capture_output=True, text=True, timeout=3600)
    if run.returncode != 0:
        raise RuntimeError(run.stderr[-2000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


def run_pipeline_only(files: int) -> None:
    from bench.corpus import cached_corpus, isolated_run_environment

    isolated_run_environment("bench-pipeline-")
    from flows.ingest_flow import ingest_documents
    from tasks.core.settings import IngestParams

    corpus = cached_corpus(files)
    started = time.perf_counter()
    summary = ingest_documents(IngestParams(sources=[str(corpus)], collection="pipeline"))
    print(json.dumps({"files": files, "seconds": round(time.perf_counter() - started, 2),
                      "chunks": summary.totals.chunks, "peak_rss_mb": round(peak_rss_mb(), 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--folder", type=Path, help="use this folder instead of the generated corpus")
    parser.add_argument("--repeat", type=int, default=1, help="encode measurements repeated (median)")
    parser.add_argument("--pipeline-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pipeline_only:
        return run_pipeline_only(args.files)

    from bench.corpus import cached_corpus, isolated_run_environment

    isolated_run_environment("bench-throughput-")
    import os

    import numpy as np

    from flows.ingest_flow import ingest_documents
    from tasks.core.embedding import effective_precision, get_embedder
    from tasks.core.settings import IngestParams, IngestSettings, PipelineConfig

    corpus = args.folder or cached_corpus(args.files)
    config = PipelineConfig.build(IngestSettings(), IngestParams(sources=[str(corpus)], collection="seed"))
    texts, counts, files = produce_chunks(corpus, config)
    tokens = sum(counts)
    embedder = get_embedder(config.model)
    fast = get_embedder(config.model, "bf16")
    rows: dict[str, dict] = {}
    vectors: dict[str, np.ndarray] = {}

    def encode_limit(model, key: str):
        def measure() -> float:
            started = time.perf_counter()
            vectors[key] = model.embed(texts, counts, batch_size=config.embed_batch_size)
            return time.perf_counter() - started
        return measure

    def encode_plain() -> float:
        started = time.perf_counter()
        embedder.model.encode(texts, batch_size=config.embed_batch_size, normalize_embeddings=True)
        return time.perf_counter() - started

    for name, measure in (("limit (sorted by tokens)", encode_limit(embedder, "fp32")),
                          ("plain model.encode", encode_plain),
                          ("limit, bf16 autocast", encode_limit(fast, "bf16"))):
        runs = [measure() for _ in range(args.repeat)]
        rows[name] = {"seconds": statistics.median(runs), "chunks": len(texts),
                      "spread": (max(runs) - min(runs)) / statistics.median(runs), "rss": peak_rss_mb()}
    cosines = (vectors["fp32"] * vectors["bf16"]).sum(axis=1)

    def pipeline(precision: str) -> tuple[float, object]:
        os.environ["INGEST_EMBED_PRECISION"] = precision
        ingest_documents(IngestParams(sources=[str(next(corpus.rglob("*.txt")))],
                                      collection=f"warmup-{precision}"))
        started = time.perf_counter()
        summary = ingest_documents(IngestParams(sources=[str(corpus)], collection=f"pipeline-{precision}"))
        return time.perf_counter() - started, summary

    pipeline_s, summary = pipeline("fp32")
    backlog_s = wait_for_backlog(summary.run_id)
    rows["pipeline (flow, end to end)"] = {"seconds": pipeline_s, "chunks": summary.totals.chunks,
                                           "spread": 0.0, "rss": peak_rss_mb()}
    fast_s, fast_summary = pipeline("bf16")
    used = effective_precision(config.model, "bf16")
    rows[f"pipeline, INGEST_EMBED_PRECISION=bf16 ({used} used)"] = {
        "seconds": fast_s, "chunks": fast_summary.totals.chunks, "spread": 0.0, "rss": peak_rss_mb()}
    os.environ.pop("INGEST_EMBED_PRECISION")
    seed_s, seed_chunks = seed_baseline(corpus, config)
    rows["seed-style baseline"] = {"seconds": seed_s, "chunks": seed_chunks, "spread": 0.0,
                                   "rss": peak_rss_mb()}
    # P4: the same flow on a tenth of the corpus and on all of it, each in a fresh process.
    rss = None
    if not args.folder and args.files >= 20:
        small, large = pipeline_child(args.files // 10, "fp32"), pipeline_child(args.files, "fp32")
        rss = (small, large)

    limit_cps = len(texts) / rows["limit (sorted by tokens)"]["seconds"]
    print(f"{files} files, {len(texts)} chunks, {tokens} tokens ({tokens / len(texts):.0f} per chunk)")
    print(f"{'step':<48}{'wall s':>9}{'chunks/s':>10}{'tokens/s':>10}{'vs limit':>10}{'peak RSS MB':>13}")
    for name, r in rows.items():
        cps = r["chunks"] / r["seconds"]
        print(f"{name:<48}{r['seconds']:>9.1f}{cps:>10.1f}{cps * tokens / len(texts):>10.0f}"
              f"{cps / limit_cps:>10.2f}{r['rss']:>13.0f}")
    print(f"Prefect backlog after the flow returned: {backlog_s:.1f} s; encode spread over "
          f"{args.repeat} run(s): ±{rows['limit (sorted by tokens)']['spread'] / 2:.0%}")
    print(f"bf16 vs fp32 vectors of the same chunks: cosine mean {cosines.mean():.6f}, min {cosines.min():.6f}")
    if rss:
        print(f"peak RSS, flow alone in a fresh process: {rss[0]['files']} files {rss[0]['peak_rss_mb']:.0f} MB, "
              f"{rss[1]['files']} files {rss[1]['peak_rss_mb']:.0f} MB")
    pipeline_cps = summary.totals.chunks / pipeline_s
    print(json.dumps({
        "files": files, "chunks": len(texts), "tokens": tokens,
        "limit_chunks_per_s": round(limit_cps, 2),
        "plain_vs_limit": round((len(texts) / rows["plain model.encode"]["seconds"]) / limit_cps, 3),
        "pipeline_vs_raw": round(pipeline_cps / limit_cps, 3),
        "vs_seed": round(pipeline_cps / (seed_chunks / seed_s), 3),
        "backlog_s": round(backlog_s, 2),
        "fast_precision": used,
        "fast_vs_fp32_limit": round(rows["limit (sorted by tokens)"]["seconds"]
                                    / rows["limit, bf16 autocast"]["seconds"], 3),
        "fast_vs_fp32_pipeline": round((fast_summary.totals.chunks / fast_s) / pipeline_cps, 3),
        "bf16_cosine_mean": round(float(cosines.mean()), 6),
        "bf16_cosine_min": round(float(cosines.min()), 6),
        "rss_ratio_10x": round(rss[1]["peak_rss_mb"] / rss[0]["peak_rss_mb"], 3) if rss else None,
    }))


if __name__ == "__main__":
    main()
