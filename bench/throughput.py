"""Throughput, side by side in one process: the padding-free encode limit, plain encode, the
pipeline (the real flow), and a seed-style sequential baseline, on the same corpus.

    python -m bench.throughput --files 300        (make bench FILES=300)
    python -m bench.throughput --folder DIR       (any folder of PDFs and .txt files)

1. limit  — ``model.encode`` of exactly the chunks the pipeline produces, ordered by token count
            and encoded batch by batch, so batches carry (almost) no padding;
2. plain  — ``model.encode`` of the same chunks in their natural order, one call;
3. pipeline — ``ingest_documents`` end to end (Prefect ephemeral mode, embedded Edge store);
            ``backlog_s``: seconds after the flow returns until Prefect has recorded every task run;
4. seed   — per file, sequentially: read, chunk, encode that file's chunks, upsert that file (what
            a naive upload router does), same model, chunker and store backend.

Ratios > 1 mean faster. The last line is JSON. Peak RSS is the process's peak after each step.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path


def peak_rss_mb() -> float:
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
    from tasks.core.ids import point_id
    from tasks.core.process import processor_for
    from tasks.core.readers import read_document
    from tasks.core.sources import discover_files, read_bytes
    from tasks.core.errors import FileRejected
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--folder", type=Path, help="use this folder instead of the generated corpus")
    parser.add_argument("--repeat", type=int, default=1, help="encode measurements repeated (median)")
    args = parser.parse_args()

    from bench.corpus import cached_corpus, isolated_run_environment

    isolated_run_environment("bench-throughput-")
    from flows.ingest_flow import ingest_documents
    from tasks.core.settings import IngestParams, IngestSettings, PipelineConfig

    corpus = args.folder or cached_corpus(args.files)
    config = PipelineConfig.build(IngestSettings(), IngestParams(sources=[str(corpus)], collection="seed"))
    texts, counts, files = produce_chunks(corpus, config)
    tokens = sum(counts)
    from tasks.core.embedding import get_embedder

    embedder = get_embedder(config.model)
    rows: dict[str, dict] = {}

    def encode_limit() -> float:
        started = time.perf_counter()
        embedder.embed(texts, counts, batch_size=config.embed_batch_size)
        return time.perf_counter() - started

    def encode_plain() -> float:
        started = time.perf_counter()
        embedder.model.encode(texts, batch_size=config.embed_batch_size, normalize_embeddings=True)
        return time.perf_counter() - started

    for name, measure in (("limit (sorted by tokens)", encode_limit), ("plain model.encode", encode_plain)):
        runs = [measure() for _ in range(args.repeat)]
        rows[name] = {"seconds": statistics.median(runs), "chunks": len(texts),
                      "spread": (max(runs) - min(runs)) / statistics.median(runs), "rss": peak_rss_mb()}

    ingest_documents(IngestParams(sources=[str(next(corpus.rglob("*.txt")))], collection="warmup"))
    started = time.perf_counter()
    summary = ingest_documents(IngestParams(sources=[str(corpus)], collection="pipeline"))
    pipeline_s = time.perf_counter() - started
    backlog_s = wait_for_backlog(summary.run_id)
    rows["pipeline (flow, end to end)"] = {"seconds": pipeline_s, "chunks": summary.totals.chunks,
                                           "spread": 0.0, "rss": peak_rss_mb()}
    seed_s, seed_chunks = seed_baseline(corpus, config)
    rows["seed-style baseline"] = {"seconds": seed_s, "chunks": seed_chunks, "spread": 0.0,
                                   "rss": peak_rss_mb()}

    limit_cps = len(texts) / rows["limit (sorted by tokens)"]["seconds"]
    print(f"{files} files, {len(texts)} chunks, {tokens} tokens ({tokens / len(texts):.0f} per chunk)")
    print(f"{'step':<30}{'wall s':>9}{'chunks/s':>10}{'tokens/s':>10}{'vs limit':>10}{'peak RSS MB':>13}")
    for name, r in rows.items():
        cps = r["chunks"] / r["seconds"]
        print(f"{name:<30}{r['seconds']:>9.1f}{cps:>10.1f}{cps * tokens / len(texts):>10.0f}"
              f"{cps / limit_cps:>10.2f}{r['rss']:>13.0f}")
    print(f"Prefect backlog after the flow returned: {backlog_s:.1f} s; encode spread over "
          f"{args.repeat} run(s): ±{rows['limit (sorted by tokens)']['spread'] / 2:.0%}")
    pipeline_cps = summary.totals.chunks / pipeline_s
    print(json.dumps({
        "files": files, "chunks": len(texts), "tokens": tokens,
        "limit_chunks_per_s": round(limit_cps, 2),
        "plain_vs_limit": round((len(texts) / rows["plain model.encode"]["seconds"]) / limit_cps, 3),
        "pipeline_vs_raw": round(pipeline_cps / limit_cps, 3),
        "vs_seed": round(pipeline_cps / (seed_chunks / seed_s), 3),
        "backlog_s": round(backlog_s, 2),
        "fast_vs_fp32_pipeline": None,  # no lower-precision path yet
        "rss_ratio_10x": None,          # not measured by this harness yet
    }))


if __name__ == "__main__":
    main()
