"""Retrieval variants measured on ``make eval``'s collection without re-ingesting it: the
lists fused (with and without the 4-grams, keywords only), how deep each list goes, the fusion
weights, ranking by file, and a document's title embedded or indexed with each chunk.

    python -m bench.eval --store-path DIR          (builds the collection 'eval' in DIR once)
    python -m bench.eval_variants --store-path DIR [--titles]
    make eval-variants                             (both, with --titles, in bench/.eval-store)

The collection's points (dense vectors, both BM25 vectors, payload) are read into memory and
each variant is searched there: exact cosine for the dense side, BM25 scored as the store scores it
(the stored term weights × the IDF the store applies, ``ln(1 + (N − n + 0.5) / (n + 0.5))``),
and reciprocal rank fusion as ``store/base.py`` asks the engine for it. The first row, the
product's configuration, must equal ``make eval``'s hybrid row: that checks the reproduction.
``--titles`` re-embeds every chunk with its document's title in front (on the runtime the
collection was built with; minutes) and indexes the title in its BM25 vector too.

Metrics are ``bench.eval``'s (``evaluate``), so each row reads like its table. Measured in
December 2026 (fp32 collection): the 4-grams lifted every overall metric or held it; none of
the other variants is better on every metric than the product's — see the README's *Search*
section.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.eval import DOCS, QUESTIONS, SMOKE_FILES, evaluate, load_questions
from tasks.core.sparse import GRAMS_VECTOR, SPARSE_VECTOR

COLLECTION = "eval"
#: Candidates a side for k = 10 hits, as ``search`` asks (``fusion_depth``).
DEPTH = 40
PRODUCT_ROW = "product: 40 candidates a side, its RRF weights"
EVERY_HIT_ROW = "the product's, in fused order (pages repeated)"
METRICS = ("recall@1", "recall@5", "recall@10", "file+page@5", "mrr")


@dataclass
class Corpus:
    """The collection in memory: unit dense vectors, BM25 postings of each keyword vector
    (by name: words and 4-grams), payloads."""

    dense: np.ndarray
    payloads: list[dict]
    postings: dict[str, dict[int, list[tuple[int, float]]]]
    idf: dict[str, dict[int, float]]

    @classmethod
    def build(cls, dense: np.ndarray, keywords: list, payloads: list[dict]) -> Corpus:
        postings: dict[str, dict[int, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
        for row, vectors in enumerate(keywords):
            for name, vector in vectors.named().items():
                for term, value in zip(vector.indices, vector.values):
                    postings[name][term].append((row, value))
        n = len(payloads)
        idf = {name: {t: math.log(1 + (n - len(p) + 0.5) / (len(p) + 0.5)) for t, p in terms.items()}
               for name, terms in postings.items()}
        return cls(dense / np.linalg.norm(dense, axis=1, keepdims=True), payloads, postings, idf)

    def dense_ranks(self, query: np.ndarray, depth: int) -> list[int]:
        return list(np.argsort(-(self.dense @ query))[:depth])

    def sparse_ranks(self, query, depth: int, name: str = SPARSE_VECTOR) -> list[int]:
        scores: dict[int, float] = defaultdict(float)
        for term, weight in zip(query.indices, query.values):
            idf = self.idf[name].get(term, 0.0)
            for row, value in self.postings[name].get(term, ()):
                scores[row] += weight * value * idf
        return sorted(scores, key=lambda row: -scores[row])[:depth]


def rrf(lists: list[list[int]], weights: Sequence[float], k: int) -> dict[int, float]:
    """Reciprocal rank fusion as Qdrant weighs it: Σ 1 / (k − 1 + rank / weight)."""
    scores: dict[int, float] = defaultdict(float)
    for ranked, weight in zip(lists, weights):
        for rank, row in enumerate(ranked, start=1):
            scores[row] += 1.0 / (k - 1 + rank / weight)
    return scores


def by_file(scores: dict[int, float], payloads: list[dict], share: float, top: int) -> list[int]:
    """Each chunk's fused score plus ``share`` × the scores of its file's other chunks among
    the ``top`` (evidence pooled per document)."""
    best = sorted(scores, key=lambda row: -scores[row])[:top]
    pooled: dict[str, float] = defaultdict(float)
    for row in best:
        pooled[payloads[row]["file_name"]] += scores[row]
    final = {row: scores[row] + share * (pooled[payloads[row]["file_name"]] - scores[row])
             for row in best}
    return sorted(final, key=lambda row: -final[row])


def title_of(path: Path) -> str:
    """A document's title as a simple extractor would take it: a PDF's /Title metadata (unless
    it is a file name) or its first line of text; a text file's ``Title:`` line or first line."""
    if path.suffix.lower() == ".pdf":
        import pypdf

        reader = pypdf.PdfReader(path)
        title = str((reader.metadata or {}).get("/Title") or "").strip()
        if title and not re.search(r"\.(dvi|tex|pdf|doc)$", title, re.I):
            return title
        lines = (line.strip() for page in reader.pages[:3] for line in (page.extract_text() or "").splitlines())
    else:
        text = path.read_text(encoding="utf-8", errors="replace")[:4000]
        if match := re.search(r"^Title:\s*(.+)$", text, re.M):
            return match.group(1).strip()
        lines = (" ".join(line.split()) for line in text.splitlines())
    return next((line for line in lines if len(line) > 3), "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store-path", type=Path, required=True,
                        help="the embedded store where 'python -m bench.eval --store-path' built 'eval'")
    parser.add_argument("--smoke", action="store_true",
                        help="only the questions of bench.eval --smoke's four documents (CI)")
    parser.add_argument("--titles", action="store_true",
                        help="also re-embed every chunk with its document's title in front (minutes)")
    args = parser.parse_args()

    import os

    os.environ["INGEST_QDRANT_PATH"] = str(args.store_path)
    from tasks.core.ids import runtime_label
    from tasks.core.payload import Hit
    from tasks.core.resources import resources
    from tasks.core.search import spread_over_pages
    from tasks.core.settings import IngestParams, IngestSettings, PipelineConfig
    from tasks.core.sparse import Bm25Encoder
    from tasks.core.store.base import RRF_K, RRF_WEIGHTS

    config = PipelineConfig.build(IngestSettings(), IngestParams(sources=["."], collection=COLLECTION))
    owner = resources()
    store = owner.store(config.store)
    points = [p for p in store.iter_points(COLLECTION, with_vectors=True) if p.payload.get("text")]
    if not points:
        raise SystemExit(f"no collection {COLLECTION!r} in {args.store_path}: run "
                         "'python -m bench.eval --store-path DIR' first")
    if not all(p.sparse is not None and p.sparse.grams or not p.payload["text"].strip() for p in points[:50]):
        raise SystemExit(f"the collection in {args.store_path} predates the n-gram vectors: build it "
                         "again with 'python -m bench.eval --store-path NEW_DIR'")
    payloads = [p.payload for p in points]
    corpus = Corpus.build(np.array([p.vector for p in points], dtype=np.float32),
                          [p.sparse for p in points], payloads)
    questions = load_questions(QUESTIONS, set(SMOKE_FILES) if args.smoke else None)
    query_embedder, bm25 = owner.embedder(config.model), Bm25Encoder()
    queries = {q.text: (query_embedder.embed([q.text], [len(q.text)], batch_size=1)[0], bm25.query(q.text))
               for q in questions}

    def searcher(corpus: Corpus, rank: Callable[[Corpus, str], list[int]], per_page: bool = True):
        """Hits as the product returns them, spread over pages (unless ``per_page`` is off)."""
        def ask(text: str, mode: str, k: int) -> list:
            hits = [Hit.from_payload(0.0, corpus.payloads[row]) for row in rank(corpus, text)]
            return (spread_over_pages(hits) if per_page else hits)[:k]
        return ask

    def fused(depth: int, weights: dict[str, float], share: float = 0.0, top: int = 0):
        """RRF of the lists ``weights`` names ("" dense, then keyword vectors), as the store
        asks the engine (a query vector without terms asks no list)."""
        def rank(corpus: Corpus, text: str) -> list[int]:
            dense, keywords = queries[text]
            lists = {"": corpus.dense_ranks(dense, depth)} if "" in weights else {}
            lists.update({name: corpus.sparse_ranks(vector, depth, name)
                          for name, vector in keywords.named().items() if vector and name in weights})
            scores = rrf(list(lists.values()), [weights[name] for name in lists], RRF_K)
            if share:
                return by_file(scores, corpus.payloads, share, top)
            return sorted(scores, key=lambda row: -scores[row])
        return rank

    words_only = {name: w for name, w in RRF_WEIGHTS.items() if name != GRAMS_VECTOR}
    variants: dict[str, tuple[Corpus, Callable]] = {
        PRODUCT_ROW: (corpus, fused(DEPTH, RRF_WEIGHTS)),
        EVERY_HIT_ROW: (corpus, fused(DEPTH, RRF_WEIGHTS)),
        "without 4-grams (dense + words)": (corpus, fused(DEPTH, words_only)),
        "keywords only (words + 4-grams)": (corpus, fused(DEPTH, {SPARSE_VECTOR: 1.0, GRAMS_VECTOR: 0.998})),
    }
    for weight in (0.5, 0.75):
        variants[f"4-grams weight {weight}"] = (corpus, fused(DEPTH, {**RRF_WEIGHTS, GRAMS_VECTOR: weight}))
    for depth in (20, 40, 100):
        for weight in (0.5, 0.75, 1.5):
            variants[f"depth {depth}, dense weight {weight}"] = (corpus, fused(depth, {**RRF_WEIGHTS, "": weight}))
        if depth != DEPTH:
            variants[f"depth {depth}, the product's weights"] = (corpus, fused(depth, RRF_WEIGHTS))
    for share in (0.1, 0.5):
        for top in (10, 40):
            variants[f"by file: +{share} x same-file scores in top {top}"] = (
                corpus, fused(DEPTH, RRF_WEIGHTS, share, top))
    if args.titles:
        titles = {path.name: title_of(path) for path in DOCS.iterdir()}
        texts = [f"{titles.get(p['file_name'], '')}\n\n{p['text']}" for p in payloads]
        # the runtime the collection was built with (recorded on every point)
        chunk_embedder = owner.embedder(config.model, runtime_label(
            payloads[0].get("embed_precision", "fp32"), payloads[0].get("embed_backend", "torch")))
        counts = [len(e.ids) for e in chunk_embedder.tokenizer.encode_batch(texts)]
        titled_dense = chunk_embedder.embed(texts, counts, batch_size=16)
        sparse = [p.sparse for p in points]
        titled_sparse = bm25.documents(texts)
        for name, dense, bm in (("title embedded", titled_dense, sparse),
                                ("title in BM25", corpus.dense, titled_sparse),
                                ("title embedded and in BM25", titled_dense, titled_sparse)):
            variants[name] = (Corpus.build(np.asarray(dense, dtype=np.float32), bm, payloads),
                              fused(DEPTH, RRF_WEIGHTS))
        dense_only = lambda corpus, text: corpus.dense_ranks(queries[text][0], DEPTH)  # noqa: E731
        variants["dense only, as built"] = (corpus, dense_only)
        variants["dense only, title embedded"] = (variants["title embedded"][0], dense_only)

    rows = {}
    for name, (chosen, rank) in variants.items():
        result = evaluate(questions, searcher(chosen, rank, per_page=name != EVERY_HIT_ROW),
                          modes=("hybrid",))["hybrid"]
        rows[name] = {k: result[k] for k in METRICS}
    print(f"\nvariants ({len(questions)} questions; in memory; the first row is the product's hybrid "
          "search; every row but the second spreads its hits over pages, as the product does)")
    print(f"{'variant':<46}" + "".join(f"{c:>12}" for c in METRICS))
    for name, row in rows.items():
        print(f"{name:<46}" + "".join(f"{row[c]:>12}" for c in METRICS))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
