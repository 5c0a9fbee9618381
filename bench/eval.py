"""Retrieval quality on real documents: dense, sparse (BM25) and hybrid search side by side.

    python -m bench.eval                      (make eval: the whole set)
    python -m bench.eval --smoke              (four documents and their questions: CI)
    python -m bench.eval --bm25-profiles      (also each BM25 text-processing profile)

The corpus is ``bench/eval/docs`` — 32 public documents (PDFs and text files; English,
German, French; manuals, laws, a standard, a paper, books), each with its origin, licence and
checksum in ``bench/eval/sources.json``. ``bench/eval/questions.jsonl`` holds the questions,
each with the file (and, for PDFs, the page or pages) that answers it, written in other words than the
answer's sentence.

The documents go through the real flow (``ingest_documents``: extraction, chunking, both
vectors, the embedded store); each question is then asked in each mode through the same
``search`` call the CLI and the API use. Reported per mode: recall@1/5/10 by file (the answer's
file among the first k hits), file+page@5 (a hit of the answer's file whose pages include the
answer's page, among the first 5; PDF questions), MRR by file over the first 10, and the
latency of the call (p50/p95, warm). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent / "eval"
DOCS, QUESTIONS = HERE / "docs", HERE / "questions.jsonl"
MODES = ("dense", "sparse", "hybrid")
#: The smoke test's documents: one PDF and one text file per language.
SMOKE_FILES = ("en-rfc2324-htcpcp.txt", "en-openquestion-paper.pdf", "de-bundesurlaubsgesetz.txt",
               "fr-bibleref-french.pdf")


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    file: str
    pages: tuple[int, ...]  # the pages that answer it (PDFs), empty for text files
    lang: str


def load_questions(path: Path, files: set[str] | None = None) -> list[Question]:
    """The questions (of ``files`` only, when given)."""
    questions = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            if files is None or record["file"] in files:
                page = record.get("page")
                pages = () if page is None else tuple(page) if isinstance(page, list) else (page,)
                questions.append(Question(record["id"], record["q"], record["file"], pages,
                                          record["lang"]))
    return questions


Searcher = Callable[[str, str, int], list]  # (question, mode, k) -> hits (tasks.core.payload.Hit)


def evaluate(questions: list[Question], searcher: Searcher, modes=MODES, k: int = 10) -> dict:
    """Per mode: recall@1/5/10 by file, file+page@5, MRR@10, latency p50/p95 (ms)."""
    results = {}
    for mode in modes:
        searcher(questions[0].text, mode, k)  # warm: first-call costs are not a query's
        ranks, page_hits, latencies, misses = [], [], [], []
        for question in questions:
            started = time.perf_counter()
            hits = searcher(question.text, mode, k)
            latencies.append((time.perf_counter() - started) * 1000)
            files = [h.file_name for h in hits]
            rank = files.index(question.file) + 1 if question.file in files else None
            ranks.append(rank)
            if rank != 1:
                misses.append({"id": question.id, "rank": rank, "top": files[:3]})
            if question.pages:
                page_hits.append(any(
                    h.file_name == question.file and h.page_start is not None
                    and any(h.page_start <= page <= (h.page_end or h.page_start) for page in question.pages)
                    for h in hits[:5]))
        count = len(questions)
        results[mode] = {
            "recall@1": round(sum(r == 1 for r in ranks) / count, 3),
            "recall@5": round(sum(r is not None and r <= 5 for r in ranks) / count, 3),
            "recall@10": round(sum(r is not None and r <= 10 for r in ranks) / count, 3),
            "file+page@5": round(sum(page_hits) / len(page_hits), 3) if page_hits else None,
            "mrr": round(sum(1 / r for r in ranks if r) / count, 3),
            "p50_ms": round(statistics.median(latencies), 1),
            "p95_ms": round(statistics.quantiles(latencies, n=20)[-1], 1) if count > 1 else round(latencies[0], 1),
            "misses": misses,
        }
    return results


def ingest(folder: Path, collection: str, **chunking):
    """The corpus through the real flow (``chunking``: chunk_tokens, chunk_overlap, when
    given); returns the run's summary."""
    from apps.prefect_api import prefect_api_ready
    from flows.ingest_flow import ingest_documents

    prefect_api_ready()
    return ingest_documents(sources=[str(folder)], collection=collection,
                            **{k: v for k, v in chunking.items() if v is not None})


def pipeline_searcher(config) -> Searcher:
    """Questions asked as ``ingest search`` / ``GET /search`` ask them."""
    from tasks.core.resources import resources
    from tasks.core.search import search

    owner = resources()
    return lambda text, mode, k: search(text, config, owner, limit=k, mode=mode)


def profile_searcher(config, profile: str) -> Searcher:
    """Like ``pipeline_searcher``, on a copy of the collection whose BM25 vectors were made
    with another text-processing ``profile`` (from each chunk's payload text)."""
    from dataclasses import replace

    from tasks.core.resources import resources
    from tasks.core.search import best_hits
    from tasks.core.sparse import Bm25Encoder

    owner = resources()
    store = owner.store(config.store)
    encoder = Bm25Encoder(profile)
    copy = f"{config.collection}-{profile}"
    store.ensure_collection(copy, store.collection_dimension(config.collection))
    batch = []
    for point in store.iter_points(config.collection, with_vectors=True):
        batch.append(replace(point, sparse=encoder.documents([point.payload.get("text", "")])[0]))
        if len(batch) == 256:
            store.upsert_points(copy, batch)
            batch = []
    if batch:
        store.upsert_points(copy, batch)
    dense_of = owner.embedder(config.model)

    def searcher(text: str, mode: str, k: int) -> list:
        dense = None if mode == "sparse" else dense_of.embed([text], [len(text)], batch_size=1)[0].tolist()
        sparse = None if mode == "dense" else encoder.query(text)
        return best_hits(store, copy, dense=dense, sparse=sparse, limit=k)
    return searcher


def print_table(title: str, results: dict, count: int) -> None:
    print(f"\n{title} ({count} questions)")
    columns = ("recall@1", "recall@5", "recall@10", "file+page@5", "mrr", "p50_ms", "p95_ms")
    print(f"{'mode':<8}" + "".join(f"{c:>13}" for c in columns))
    for mode, row in results.items():
        print(f"{mode:<8}" + "".join(f"{'-' if row[c] is None else row[c]:>13}" for c in columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="four documents and their questions")
    parser.add_argument("--bm25-profiles", action="store_true",
                        help="also evaluate each BM25 text-processing profile (tasks.core.sparse.PROFILES)")
    parser.add_argument("--misses", action="store_true", help="list the questions each mode misses")
    parser.add_argument("--chunk-tokens", type=int, help="chunk size of the run (default: the pipeline's)")
    parser.add_argument("--chunk-overlap", type=int, help="chunk overlap of the run")
    parser.add_argument("--store-path", type=Path,
                        help="keep the embedded store here; a collection 'eval' already in it is reused")
    args = parser.parse_args()

    import os
    import shutil
    import tempfile

    from bench.corpus import isolated_run_environment

    workdir = isolated_run_environment("bench-eval-")
    if args.store_path:
        os.environ["INGEST_QDRANT_PATH"] = str(args.store_path)
    files = set(SMOKE_FILES) if args.smoke else None
    questions = load_questions(QUESTIONS, files)
    folder = DOCS
    if args.smoke:
        folder = Path(tempfile.mkdtemp(dir=workdir))
        for name in SMOKE_FILES:
            shutil.copy(DOCS / name, folder / name)

    from tasks.core.settings import IngestParams, IngestSettings, PipelineConfig

    started = time.perf_counter()
    # an unchanged collection costs a check per file
    summary = ingest(folder, "eval", chunk_tokens=args.chunk_tokens, chunk_overlap=args.chunk_overlap)
    ingest_s = time.perf_counter() - started
    t = summary.totals
    print(f"ingested {t.files} files ({t.indexed} indexed, {t.unchanged} unchanged, {t.failed} "
          f"failed): {t.chunks} chunks in {ingest_s:.0f} s")
    config = PipelineConfig.build(IngestSettings(), IngestParams(sources=["."], collection="eval"))
    results = evaluate(questions, pipeline_searcher(config))
    print_table("collection as built (BM25 profile: default)", results, len(questions))
    langs = sorted({q.lang for q in questions})
    by_lang = {lang: evaluate([q for q in questions if q.lang == lang], pipeline_searcher(config))
               for lang in langs}
    for lang in langs:
        print_table(f"questions in {lang}", by_lang[lang], sum(q.lang == lang for q in questions))
    profiles = {}
    if args.bm25_profiles:
        from tasks.core.sparse import PROFILE, PROFILES

        for profile in PROFILES:
            if profile != PROFILE:
                profiles[profile] = evaluate(questions, profile_searcher(config, profile),
                                             modes=("sparse", "hybrid"))
                print_table(f"BM25 profile {profile}", profiles[profile], len(questions))
    if args.misses:
        for mode, row in results.items():
            print(f"\n{mode} misses (rank of the answer's file, top 3 files):")
            for miss in row["misses"]:
                print(f"  {miss['id']}: rank {miss['rank']}  {miss['top']}")

    def strip(rows: dict) -> dict:
        return {mode: {k: v for k, v in row.items() if k != "misses"} for mode, row in rows.items()}

    print(json.dumps({"questions": len(questions), "documents": t.files, "chunks": t.chunks,
                      "ingest_s": round(ingest_s, 1), **strip(results),
                      "by_language": {lang: strip(rows) for lang, rows in by_lang.items()},
                      "bm25_profiles": {p: strip(rows) for p, rows in profiles.items()}}))


if __name__ == "__main__":
    main()
