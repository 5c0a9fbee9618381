"""Hybrid retrieval in the store, on both embedded backends: BM25 vectors (words and their
character 4-grams) beside the dense ones, search by any or all fused in the engine, and
collections built before hybrid search or before the n-gram vectors given the keyword vectors
they lack from their payload text (dense vectors untouched), crash-safely."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tasks.core.errors import CollectionMismatchError
from tasks.core.ids import point_id
from tasks.core.settings import StoreLocation
from tasks.core.sparse import SPARSE_VECTOR, SPARSE_VECTORS, Bm25Encoder
from tasks.core.store import StoredPoint, open_store
from tasks.core.store.edge import BUILDING, REPLACED, EdgeStore
from tasks.core.store.qdrant import PENDING
from tasks.core.transfer import copy_collection
from tests.conftest import create_pre_hybrid, write_pre_grams

pytestmark = [pytest.mark.integration, pytest.mark.store]
BM25 = Bm25Encoder()

TEXTS = [
    "Replace the coupling gasket before the pump is restarted.",
    "The drive shaft of model KV-4471 needs a torque of 45 newton metres.",
    "Lubricate the bearings of the impeller every six months.",
    "Pumps must be drained before winter storage.",
    "Die Wartung der Pumpe erfolgt jährlich durch den Hersteller.",
    "Alle Textzitate werden mit dem Befehl enquote gesetzt.",
]
ADDED = "added keyword vectors (bm25, grams) to 6 points (dense vectors kept)"


def chunk_points(with_sparse: bool = True, dim: int = 8) -> list[StoredPoint]:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(len(TEXTS), dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sparse = BM25.documents(TEXTS) if with_sparse else [None] * len(TEXTS)
    return [StoredPoint(id=point_id(f"file:///doc{i}.txt", 0), vector=v.tolist(),
                        payload={"source": f"file:///doc{i}.txt", "chunk_index": 0, "text": t},
                        sparse=s)
            for i, (t, v, s) in enumerate(zip(TEXTS, vectors, sparse))]


def texts(hits) -> list[str]:
    return [h.payload["text"] for h in hits]


@pytest.fixture
def store(tmp_path, store_backend):
    opened = open_store(StoreLocation.embedded(store_backend, tmp_path))
    yield opened
    opened.close()


def test_new_collections_hold_both_vectors_and_search_by_either_or_both(store):
    store.ensure_collection("docs", 8)
    assert store.shape("docs").sparse == set(SPARSE_VECTORS) and store.shape("docs").complete
    points = chunk_points()
    store.upsert_points("docs", points)
    keyword = BM25.query("KV-4471 torque")
    assert texts(store.search("docs", sparse=keyword, limit=1)) == [TEXTS[1]]
    # the dense query points at another chunk; fused, both candidates lead the list
    fused = texts(store.search("docs", dense=points[3].vector, sparse=keyword, limit=5))
    assert set(fused[:2]) == {TEXTS[1], TEXTS[3]} and len(fused) == 5
    # a compound's part: no word in common, found by its 4-grams
    assert not set(BM25.query("Zitate").words.indices) & set(BM25.documents([TEXTS[5]])[0].words.indices)
    assert texts(store.search("docs", sparse=BM25.query("Zitate"), limit=1)) == [TEXTS[5]]
    assert texts(store.search("docs", dense=points[3].vector, limit=1)) == [TEXTS[3]]
    # a German word meets its own form first
    assert texts(store.search("docs", sparse=BM25.query("Wartung"), limit=1)) == [TEXTS[4]]
    # a query without letters or digits has no keyword terms: dense alone answers in hybrid
    assert not BM25.query("?! -")
    assert texts(store.search("docs", dense=points[2].vector, sparse=BM25.query("?! -"),
                              limit=1)) == [TEXTS[2]]
    assert store.search("docs", sparse=BM25.query("?! -"), limit=3) == []


def test_a_collection_built_before_hybrid_gets_bm25_from_its_text(store):
    create_pre_hybrid(store, "old")
    points = chunk_points(with_sparse=False)
    store.upsert_points("old", points)
    assert not store.shape("old").sparse
    with pytest.raises(CollectionMismatchError, match="no BM25 vectors yet"):
        store.search("old", sparse=BM25.query("KV-4471"), limit=1)
    dense_before = {p.id: p.vector for p in store.iter_points("old", with_vectors=True)}

    done = store.ensure_collection("old", 8, encode=BM25.documents)

    assert done == ADDED
    assert store.shape("old").complete and store.count("old") == 6
    after = {p.id: p for p in store.iter_points("old", with_vectors=True)}
    assert after.keys() == dense_before.keys()
    for point_id_, point in after.items():
        assert np.allclose(point.vector, dense_before[point_id_], atol=1e-6)
        assert point.sparse == BM25.documents([point.payload["text"]])[0]
    assert texts(store.search("old", sparse=BM25.query("KV-4471"), limit=1)) == [TEXTS[1]]
    assert store.ensure_collection("old", 8, encode=BM25.documents) is None  # once only


@pytest.mark.own_backends
def test_edge_rebuild_cut_between_its_renames_is_undone_then_redone(tmp_path):
    store = EdgeStore(StoreLocation.embedded("edge", tmp_path))
    create_pre_hybrid(store, "old")
    store.upsert_points("old", chunk_points(with_sparse=False))
    store.close()
    folder = store._folder("old")
    # the state a crash leaves after the first rename: old shard set aside, new one built
    os.rename(folder, folder.with_name("old" + REPLACED))
    folder.with_name("old" + BUILDING).mkdir()

    store = EdgeStore(StoreLocation.embedded("edge", tmp_path))
    try:
        assert store.shape("old").sparse == frozenset() and store.count("old") == 6  # put back
        assert store.ensure_collection("old", 8, encode=BM25.documents).startswith("added")
        assert sorted(p.name for p in store.root.iterdir()) == ["old"]
    finally:
        store.close()
    store = EdgeStore(StoreLocation.embedded("edge", tmp_path))
    try:
        assert store.shape("old").complete and store.count("old") == 6
    finally:
        store.close()


def test_qdrant_fill_cut_short_is_resumed(tmp_path, monkeypatch):
    store = open_store(StoreLocation.embedded("qdrant-local", tmp_path))
    try:
        create_pre_hybrid(store, "old")
        store.upsert_points("old", chunk_points(with_sparse=False))
        calls = []

        def crash(texts_):
            calls.append(len(texts_))
            raise KeyboardInterrupt("crash")

        with pytest.raises(KeyboardInterrupt):
            store.ensure_collection("old", 8, encode=crash)
        config = store.client.get_collection("old").config
        assert SPARSE_VECTOR in config.params.sparse_vectors and config.metadata[PENDING]
        assert store.shape("old").sparse == frozenset()  # the vectors exist, not filled yet
        assert store.ensure_collection("old", 8, encode=BM25.documents).startswith("added")
        assert store.shape("old").complete
        assert texts(store.search("old", sparse=BM25.query("KV-4471"), limit=1)) == [TEXTS[1]]
    finally:
        store.close()


@pytest.mark.own_backends
@pytest.mark.parametrize("source_kind,target_kind", [("qdrant-local", "edge"), ("edge", "qdrant-local")])
def test_migrating_a_pre_hybrid_collection_fills_bm25_on_the_way(tmp_path, source_kind, target_kind):
    source = open_store(StoreLocation.embedded(source_kind, tmp_path))
    target = open_store(StoreLocation.embedded(target_kind, tmp_path))
    try:
        create_pre_hybrid(source, "old")
        source.upsert_points("old", chunk_points(with_sparse=False))
        assert copy_collection(source, target, "old", encode=BM25.documents) == 6
        assert target.shape("old").complete
        assert texts(target.search("old", sparse=BM25.query("KV-4471"), limit=1)) == [TEXTS[1]]
    finally:
        source.close()
        target.close()


def test_a_collection_built_before_the_grams_is_searched_by_words_then_gets_them(store):
    create_pre_hybrid(store, "words", words=True)
    points = chunk_points()
    write_pre_grams(store, "words", points)
    assert store.shape("words").sparse == {SPARSE_VECTOR} and not store.shape("words").complete
    # searched with the vectors it has: words only, so the compound's part is not found
    assert texts(store.search("words", sparse=BM25.query("KV-4471"), limit=1)) == [TEXTS[1]]
    assert store.search("words", sparse=BM25.query("Zitate"), limit=1) == []
    dense_before = {p.id: p.vector for p in store.iter_points("words", with_vectors=True)}

    assert store.ensure_collection("words", 8, encode=BM25.documents) == (
        "added keyword vectors (grams) to 6 points (dense vectors kept)")

    assert store.shape("words").complete
    after = {p.id: p for p in store.iter_points("words", with_vectors=True)}
    for point_id_, point in after.items():
        assert np.allclose(point.vector, dense_before[point_id_], atol=1e-6)
        assert point.sparse == BM25.documents([point.payload["text"]])[0]
    assert texts(store.search("words", sparse=BM25.query("Zitate"), limit=1)) == [TEXTS[5]]


@pytest.mark.own_backends
@pytest.mark.parametrize("source_kind,target_kind", [("qdrant-local", "edge"), ("edge", "qdrant-local")])
def test_migrating_a_collection_without_grams_fills_them_on_the_way(tmp_path, source_kind, target_kind):
    source = open_store(StoreLocation.embedded(source_kind, tmp_path))
    target = open_store(StoreLocation.embedded(target_kind, tmp_path))
    try:
        create_pre_hybrid(source, "words", words=True)
        write_pre_grams(source, "words", chunk_points())
        assert copy_collection(source, target, "words", encode=BM25.documents) == 6
        assert target.shape("words").complete
        assert {p.id: p.sparse for p in target.iter_points("words", with_vectors=True)} == {
            p.id: p.sparse for p in chunk_points()}
    finally:
        source.close()
        target.close()


def test_fusion_ties_are_broken_the_same_way_every_time(store):
    # A is first by meaning and second by keywords, B the other way round: equal reciprocal
    # ranks, which the engines ordered arbitrarily. The weights (store.base.RRF_WEIGHTS) break
    # the tie the same way on both backends: the hit ranked higher by meaning wins. (Two lists
    # make the exact tie: a collection with the words' vector only, as built before the grams;
    # the weights differ for every pair of lists.)
    create_pre_hybrid(store, "ties", dim=2, words=True)
    a, b = "the gasket of the pump housing and its sealing ring", "gasket gasket"
    [sparse_a, sparse_b] = BM25.documents([a, b])
    write_pre_grams(store, "ties", [
        StoredPoint(id=point_id("file:///a.txt", 0), vector=[1.0, 0.0], sparse=sparse_a,
                    payload={"source": "file:///a.txt", "chunk_index": 0, "text": a}),
        StoredPoint(id=point_id("file:///b.txt", 0), vector=[0.8, 0.6], sparse=sparse_b,
                    payload={"source": "file:///b.txt", "chunk_index": 0, "text": b})])
    query = BM25.query("gasket")
    assert texts(store.search("ties", dense=[1.0, 0.0], limit=2)) == [a, b]
    assert texts(store.search("ties", sparse=query, limit=2)) == [b, a]
    for _ in range(5):
        assert texts(store.search("ties", dense=[1.0, 0.0], sparse=query, limit=2)) == [a, b]
