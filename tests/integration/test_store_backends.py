"""Across backends: migration without re-embedding, export, and Edge's own behaviour
(the index built in pieces as files are written, exact search before it, the segment
cap given to shards made before it, persistence across reopen)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from tasks.core.heap import heavy_step
from tasks.core.ids import point_id
from tasks.core.settings import StoreLocation
from tasks.core.sparse import SPARSE_VECTORS, Bm25Encoder
from tasks.core.store import StoredPoint, open_store
from tasks.core.store.edge import CONFIG_FILE, INDEXING_THRESHOLD_KB, EdgeStore, segment_cap_kb
from tasks.core.transfer import copy_collection, export_records
from tests.conftest import create_edge_shard

pytestmark = [pytest.mark.integration, pytest.mark.store]
BM25 = Bm25Encoder()


def make_points(count: int, dim: int = 16):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [StoredPoint(id=point_id(f"file:///f{i // 5}", i % 5), vector=v.tolist(),
                        payload={"source": f"file:///f{i // 5}", "chunk_index": i % 5, "text": f"t{i}"},
                        sparse=BM25.documents([f"t{i} word{i % 13}"])[0])
            for i, v in enumerate(vectors)]


def contents(store, collection):
    return {p.id: (p.payload, p.vector, p.sparse)
            for p in store.iter_points(collection, with_vectors=True)}


def assert_same_contents(actual, expected):
    assert actual.keys() == expected.keys()
    for key, (payload, vector, sparse) in expected.items():
        assert actual[key][0] == payload
        assert np.allclose(actual[key][1], vector, atol=1e-6)
        assert sparse is not None
        for name, vector in sparse.named().items():
            assert actual[key][2].named()[name].indices == vector.indices
            assert np.allclose(actual[key][2].named()[name].values, vector.values, atol=1e-6)


@pytest.mark.own_backends
@pytest.mark.parametrize("source_kind,target_kind", [("qdrant-local", "edge"), ("edge", "qdrant-local")])
def test_migration_copies_every_point_exactly(tmp_path, source_kind, target_kind):
    source = open_store(StoreLocation.embedded(source_kind, tmp_path))
    target = open_store(StoreLocation.embedded(target_kind, tmp_path))
    try:
        source.ensure_collection("docs", 16)
        source.upsert_points("docs", make_points(1200))
        assert copy_collection(source, target, "docs", encode=BM25.documents, batch_size=500) == 1200
        assert_same_contents(contents(target, "docs"), contents(source, "docs"))
        assert copy_collection(source, target, "docs", encode=BM25.documents) == 1200  # idempotent
        assert target.count("docs") == 1200
    finally:
        source.close()
        target.close()


def test_export_lines(tmp_path, store_backend):
    store = open_store(StoreLocation.embedded(store_backend, tmp_path))
    try:
        store.ensure_collection("docs", 16)
        store.upsert_points("docs", make_points(7))
        plain = list(export_records(store, "docs", vectors=False))
        assert len(plain) == 7 and set(plain[0]) == {"id", "payload"}
        full = list(export_records(store, "docs", vectors=True))
        assert len(full[0]["vector"]) == 16
        assert set(full[0]["sparse"]) == {"bm25", "grams"}
        assert all(set(v) == {"indices", "values"} and v["indices"] for v in full[0]["sparse"].values())
    finally:
        store.close()


@pytest.mark.own_backends
def test_edge_searches_exactly_before_the_index_and_the_same_after(tmp_path):
    # 384-d like the model's vectors: 8,000 of them pass Edge's default indexing threshold.
    points = make_points(8000, dim=384)
    queries = [points[i].vector for i in (3, 700, 7999)]
    writer = EdgeStore(StoreLocation.embedded("edge", tmp_path, optimize_threshold=20_000))
    try:
        writer.ensure_collection("docs", 384)
        writer.upsert_points("docs", points)
        before = [[h.payload["text"] for h in writer.search("docs", dense=q, limit=5)] for q in queries]
        assert [b[0] for b in before] == ["t3", "t700", "t7999"]  # exact, no index yet
        assert writer.maintain("docs") is None  # below this store's threshold: exact search is cheap
    finally:
        writer.close()
    store = EdgeStore(StoreLocation.embedded("edge", tmp_path, optimize_threshold=1000))
    try:
        assert store.maintain("docs") == "optimized: 8000 of 8000 points indexed"
        assert store.maintain("docs") is None  # nothing waits any more
        after = [[h.payload["text"] for h in store.search("docs", dense=q, limit=5)] for q in queries]
        assert [a[0] for a in after] == ["t3", "t700", "t7999"]
    finally:
        store.close()


@pytest.mark.own_backends
def test_edge_builds_the_index_in_pieces_as_files_are_written(tmp_path):
    # A large run must not keep every point it wrote waiting for one build at its end: each file
    # that leaves the threshold's worth waiting builds the index for them, and the pieces stay
    # separate segments (capped, so Edge does not merge them back into one rebuild).
    # 2,000 of the model's 384-d vectors are 3 MB, far below Edge's own default indexing
    # threshold (10 MB): the store's threshold decides, not Edge's.
    store = EdgeStore(StoreLocation.embedded("edge", tmp_path, optimize_threshold=2000))
    try:
        store.ensure_collection("docs", 384)
        points = make_points(6000, dim=384)
        for n in range(3):  # three "files" of 2,000 chunks
            part = [StoredPoint(point_id(f"f{n}", j), p.vector, {**p.payload, "source": f"f{n}"}, p.sparse)
                    for j, p in enumerate(points[n * 2000:(n + 1) * 2000])]
            store.replace_file_points("docs", f"f{n}", part, batch_size=512)
            info = store._shard("docs").info()
            indexed = info.indexed_vectors_count - 2 * info.points_count  # less the BM25 vectors
            assert indexed == 2000 * (n + 1), (n, info)
        assert store._shard("docs").info().segments_count >= 3
        assert store.maintain("docs") is None  # the run's end finds nothing waiting
        for i in (5, 2001, 5999):
            assert store.search("docs", dense=points[i].vector, limit=1)[0].payload["text"] == f"t{i}"
    finally:
        store.close()


@pytest.mark.own_backends
def test_edge_builds_its_index_between_model_batches(tmp_path):
    # A build holds ~60-100 MB for about a second (the segment builder keeps whole 32 MB BM25
    # page files resident), a model batch its activations: they wait for each other
    # (tasks.core.heap), so a run's peak is the larger of the two, not their sum.
    writer = EdgeStore(StoreLocation.embedded("edge", tmp_path, optimize_threshold=20_000))
    try:
        writer.ensure_collection("docs", 384)
        points = [StoredPoint(point_id("f0", j), p.vector, {**p.payload, "source": "f0"}, p.sparse)
                  for j, p in enumerate(make_points(300, dim=384))]
        writer.replace_file_points("docs", "f0", points, batch_size=128)  # 300 points waiting
    finally:
        writer.close()
    store = EdgeStore(StoreLocation.embedded("edge", tmp_path, optimize_threshold=200))
    done, result = threading.Event(), {}

    def build():
        result["built"] = store.maintain("docs")
        done.set()

    try:
        with heavy_step():  # a model batch in progress
            threading.Thread(target=build, daemon=True).start()
            assert not done.wait(2)  # a build of 300 points takes a fraction of that
        assert done.wait(300)
        assert result["built"] == "optimized: 300 of 300 points indexed"
    finally:
        store.close()


@pytest.mark.own_backends
def test_edge_shard_made_before_the_segment_cap_gets_it_and_keeps_its_placement(tmp_path):
    # A shard the previous version made (every vector, Edge's default placement, no optimizer
    # settings): opening it adds the cap, keeps the placement (changing it would rebuild its
    # segments) and its points stay as they were.
    store = EdgeStore(StoreLocation.embedded("edge", tmp_path))
    create_edge_shard(store, "docs", 16, SPARSE_VECTORS)  # closed: opened below as found
    folder = store._folder("docs")
    points = make_points(20)
    try:
        store.upsert_points("docs", points)
        stored = json.loads((folder / CONFIG_FILE).read_text())
        assert stored["optimizers"]["max_segment_size"] == segment_cap_kb(16, store.optimize_threshold)
        assert stored["optimizers"]["indexing_threshold"] == INDEXING_THRESHOLD_KB
        assert "memory" not in stored["vectors"][""]
        assert all("memory" not in v for v in stored["sparse_vectors"].values())
        assert store.search("docs", dense=points[7].vector, limit=1)[0].payload["text"] == "t7"
        assert store.search("docs", sparse=BM25.query("t7 word7"), limit=1)[0].payload["text"] == "t7"
    finally:
        store.close()


@pytest.mark.own_backends
def test_edge_persists_across_reopen(tmp_path):
    location = StoreLocation.embedded("edge", tmp_path)
    store = open_store(location)
    store.ensure_collection("docs", 16)
    store.upsert_points("docs", make_points(50))
    expected = contents(store, "docs")
    store.close()
    reopened = open_store(location)
    try:
        assert_same_contents(contents(reopened, "docs"), expected)
    finally:
        reopened.close()
