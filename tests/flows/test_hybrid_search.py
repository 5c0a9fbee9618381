"""Hybrid search end to end (real model, both embedded backends): a keyword question the
embedding model cannot answer — a part code among near-identical sheets — is missed by dense
search and found by hybrid search, which is the default of the Python call, ``GET /search``
and ``ingest search``."""

from __future__ import annotations

import pytest

from flows.ingest_flow import ingest_documents
from tasks.core.errors import CollectionMismatchError, ConfigError
from tasks.core.resources import resources
from tasks.core.search import search
from tasks.core.settings import IngestParams, IngestSettings, PipelineConfig
from tasks.core.store import StoredPoint

pytestmark = [pytest.mark.flow, pytest.mark.store]

# Maintenance sheets: the one for valve VX-3318 is about its housing; the others are about
# replacing seals — to the embedding model, closer to a question about seals. Only the part
# code, which no other sheet has, points to the right one; the model does not read codes.
SHEETS = {
    "valve-3318.txt": "Maintenance sheet for valve assembly VX-3318. Check the actuator housing "
                      "for cracks and tighten the mounting bolts. Gaskets are inspected at each "
                      "yearly shutdown.",
    "pump-p120.txt": "Pump P-120: the shaft packing rings are renewed every six months, and worn "
                     "packing is returned to the supplier for reconditioning.",
    "circulation-pump.txt": "Sealing rings of the circulation pump are exchanged every three "
                            "months because of the abrasive slurry.",
    "compressor-c7.txt": "Compressor C-7: replace the O-rings every twelve months; O-ring kits "
                         "are kept in the store room.",
    "agitator-m4.txt": "Agitator M-4: the mechanical sealing faces need renewing every two years "
                       "under normal operating pressure.",
}
QUESTION = "How often are the seals of VX-3318 replaced?"


@pytest.fixture
def sheets(ingest_env, tmp_path):
    folder = tmp_path / "sheets"
    folder.mkdir()
    for name, text in SHEETS.items():
        (folder / name).write_text(text + "\n")
    summary = ingest_documents(sources=[str(folder)], collection="sheets")
    assert summary.totals.indexed == 5
    return PipelineConfig.build(IngestSettings(), IngestParams(sources=["."], collection="sheets"))


def test_a_keyword_question_dense_misses_and_hybrid_finds(sheets):
    def ranked(mode):
        return [h.file_name for h in search(QUESTION, sheets, resources(), limit=5, mode=mode)]

    dense = ranked("dense")
    assert dense[0] != "valve-3318.txt" and dense.index("valve-3318.txt") >= 2
    assert ranked("sparse")[0] == "valve-3318.txt"
    assert ranked("hybrid")[0] == "valve-3318.txt"
    # hybrid is the default
    [hit] = search(QUESTION, sheets, resources(), limit=1)
    assert hit.file_name == "valve-3318.txt" and "VX-3318" in hit.text
    with pytest.raises(ConfigError, match="unknown search mode"):
        search(QUESTION, sheets, resources(), mode="fuzzy")


def test_a_run_into_a_pre_hybrid_collection_adds_bm25_without_re_embedding(sheets, ingest_env):
    from tasks.core.settings import StoreLocation
    from tests.conftest import close_stores, create_pre_hybrid

    store = resources().store(sheets.store)
    points = list(store.iter_points("sheets", with_vectors=True))
    # The same points as the pipeline wrote them before hybrid search: dense vectors only.
    create_pre_hybrid(store, "old", dim=384)
    store.upsert_points("old", [StoredPoint(p.id, p.vector, p.payload) for p in points])
    assert not store.shape("old").sparse
    old = PipelineConfig.build(IngestSettings(), IngestParams(sources=["."], collection="old"))
    # Until a run adds them, hybrid falls back to meaning only; keywords alone say what is missing.
    assert search(QUESTION, old, resources(), limit=5)
    with pytest.raises(CollectionMismatchError, match="no BM25 vectors yet"):
        search(QUESTION, old, resources(), mode="sparse")
    close_stores()

    folder = next(iter({p.payload["source"].rsplit("/", 1)[0] for p in points})).removeprefix("file://")
    summary = ingest_documents(sources=[folder], collection="old")

    assert summary.totals.unchanged == 5 and summary.totals.chunks_embedded == 0
    store = resources().store(StoreLocation.embedded(sheets.store.kind, ingest_env))
    assert store.shape("old").sparse
    [hit] = search(QUESTION, old, resources(), limit=1, mode="sparse")
    assert hit.file_name == "valve-3318.txt"
    after = {p.id: p.vector for p in store.iter_points("old", with_vectors=True)}
    assert all(after[p.id] == pytest.approx(p.vector, abs=1e-6) for p in points)


# A manual whose first page says much about descaling (several chunks at 48 tokens), its second
# page a little, in other words, and its third page nothing.
MANUAL = [
    "Descaling the boiler. Limescale from hard water builds up inside the boiler and the heating "
    "element of the espresso machine, and it slows the flow of water through the group head.\n\n"
    "Descale the boiler every two months with citric acid: dissolve the descaling powder in a "
    "full water tank, run half the tank through the steam wand, and let the solution act in the "
    "boiler for twenty minutes.\n\n"
    "Then run the rest of the descaling solution through the group head, rinse the tank, and run "
    "two full tanks of fresh water through the boiler so that no acid taste remains in the "
    "coffee. Never descale a hot boiler: the citric acid must work on a cold machine.",
    "Hard water areas: where the water is very hard, remove the limescale from the boiler every "
    "month instead, and use filtered water between descaling runs.",
    "Grinding. A finer grind slows the shot and a coarser one speeds it up; adjust the grinder one "
    "step at a time and taste the result.",
]
DESCALE_QUESTION = "How often should the limescale be removed from the boiler?"


def test_hits_cite_other_pages_before_a_page_again(ingest_env, tmp_path):
    from bench.corpus import write_pdf

    write_pdf(tmp_path / "manual" / "espresso-manual.pdf", MANUAL)
    summary = ingest_documents(sources=[str(tmp_path / "manual")], collection="manual",
                               chunk_tokens=48, chunk_overlap=8)
    assert summary.totals.indexed == 1 and summary.totals.chunks >= 5
    config = PipelineConfig.build(IngestSettings(), IngestParams(sources=["."], collection="manual"))
    owner = resources()

    # What the store ranks first, hit by hit: the first page's chunks, several of them.
    raw = owner.store(config.store).search(
        "manual", dense=owner.query_embedder(config.model).embed_query(DESCALE_QUESTION).tolist(),
        sparse=owner.bm25().query(DESCALE_QUESTION), limit=3)
    raw_pages = [h.payload["page_start"] for h in raw]
    assert len(set(raw_pages)) < len(raw_pages), raw_pages

    for mode in ("hybrid", "dense", "sparse"):
        hits = search(DESCALE_QUESTION, config, owner, limit=3, mode=mode)
        cited = [(h.page_start, h.page_end) for h in hits]
        assert len(set(cited)) == len(cited) == 3, (mode, cited)
        assert {h.page_start for h in hits} >= {1, 2}, (mode, cited)
    # More hits than pages: the first page's other chunks follow, none is lost.
    hits = search(DESCALE_QUESTION, config, owner, limit=summary.totals.chunks)
    assert len(hits) == summary.totals.chunks
    assert len({(h.page_start, h.page_end) for h in hits[:3]}) == 3
