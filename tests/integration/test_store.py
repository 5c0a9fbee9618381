"""The Qdrant adapter on disk (embedded mode) and its error translation over real HTTP."""

from __future__ import annotations

import http.server
import threading

import numpy as np
import pytest

from tasks.core.errors import CollectionMismatchError, StoreError, StoreUnavailableError
from tasks.core.ids import point_id
from tasks.core.settings import StoreLocation
from tasks.core.store import StoredPoint, VectorStore, open_store
from tasks.core.store.qdrant import QdrantClientStore
from tests.conftest import free_port, get_store

pytestmark = [pytest.mark.integration, pytest.mark.store]


def points(source: str, count: int, *, sha: str = "s1", dim: int = 8):
    rng = np.random.default_rng(count)
    return [StoredPoint(id=point_id(source, i), vector=rng.random(dim).tolist(),
                        payload={"source": source, "chunk_index": i, "chunk_count": count,
                                 "content_sha256": sha, "config_fingerprint": "f", "text": f"t{i}",
                                 "source_signature": f"sig-{sha}"})
            for i in range(count)]


def crash_after(monkeypatch, store: VectorStore, writes: int) -> None:
    """Make the backend stop (as a killed process would) after ``writes`` write primitives."""
    left = [writes]
    for name in ("_upsert", "_delete", "_set_payload"):
        real = getattr(store, name)

        def write(*args, _real=real, **kwargs):
            if left[0] == 0:
                raise KeyboardInterrupt("crash")
            left[0] -= 1
            return _real(*args, **kwargs)
        monkeypatch.setattr(store, name, write)


def ids_of(store: VectorStore, collection: str) -> set[str]:
    return {p.id for p in store.iter_points(collection)}


def test_collection_is_created_and_checked(store_location):
    store = get_store(store_location)
    store.ensure_collection("docs", 8)
    store.ensure_collection("docs", 8)  # idempotent
    with pytest.raises(CollectionMismatchError, match="8-d"):
        store.ensure_collection("docs", 384)
    assert store.count("docs") == 0


def test_replace_shrinks_without_leftovers(store_location):
    store = get_store(store_location)
    store.ensure_collection("docs", 8)
    store.replace_file_points("docs", "file:///a", points("file:///a", 40), batch_size=16)
    store.replace_file_points("docs", "file:///b", points("file:///b", 3), batch_size=16)
    store.replace_file_points("docs", "file:///a", points("file:///a", 10, sha="s2"), batch_size=16)
    expected = {point_id("file:///a", i) for i in range(10)} | {point_id("file:///b", i) for i in range(3)}
    assert ids_of(store, "docs") == expected
    heads = store.file_heads("docs", ["file:///a", "file:///b", "file:///missing"])
    assert set(heads) == {"file:///a", "file:///b"}
    a = heads["file:///a"]
    assert (a.content_sha256, a.chunk_count, a.complete, a.signature) == ("s2", 10, True, "sig-s2")
    assert store.indexed_sources("docs") == {"file:///a", "file:///b"}
    store.delete_sources("docs", ["file:///a"])
    assert ids_of(store, "docs") == {point_id("file:///b", i) for i in range(3)}


@pytest.mark.parametrize("writes", range(7))  # head, 2 upserts, 3 deletes, commit
def test_a_crash_at_any_write_leaves_the_head_incomplete_or_old(store_location, writes, monkeypatch):
    store = get_store(store_location)
    store.ensure_collection("docs", 8)
    store.replace_file_points("docs", "file:///a", points("file:///a", 6), batch_size=2)
    with monkeypatch.context() as patch:
        crash_after(patch, store, writes)
        with pytest.raises(KeyboardInterrupt):
            store.replace_file_points("docs", "file:///a", points("file:///a", 3, sha="s2"), batch_size=1)
    head = store.file_heads("docs", ["file:///a"])["file:///a"]
    # Either nothing changed yet (the old version, still complete) or the head says "redo me".
    assert (head.complete and head.content_sha256 == "s1") or not head.complete
    if head.complete:
        assert ids_of(store, "docs") == {point_id("file:///a", i) for i in range(6)}
    # The repair is a normal write: afterwards exactly the new version is stored.
    store.replace_file_points("docs", "file:///a", points("file:///a", 3, sha="s2"), batch_size=1)
    assert ids_of(store, "docs") == {point_id("file:///a", i) for i in range(3)}
    assert store.file_heads("docs", ["file:///a"])["file:///a"].complete


def test_overwrite_recreates_a_collection_of_another_size(store_location):
    store = get_store(store_location)
    store.ensure_collection("docs", 8)
    store.replace_file_points("docs", "file:///a", points("file:///a", 2), batch_size=2)
    with pytest.raises(CollectionMismatchError, match="--overwrite"):
        store.ensure_collection("docs", 16)
    assert store.count("docs") == 2
    store.ensure_collection("docs", 16, recreate_on_mismatch=True)
    assert store.count("docs") == 0
    store.ensure_collection("docs", 16, recreate_on_mismatch=True)  # fits now: kept


def test_search_and_missing_collection(store_location):
    store = get_store(store_location)
    store.ensure_collection("docs", 8)
    written = points("file:///a", 5)
    store.replace_file_points("docs", "file:///a", written, batch_size=2)
    hits = store.search("docs", dense=written[3].vector, limit=2)
    assert hits[0].payload["chunk_index"] == 3 and hits[0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(StoreError, match="does not exist"):
        store.search("nope", dense=written[0].vector, limit=1)


def test_second_process_on_the_same_folder_gets_a_clear_error(store_location):
    get_store(store_location).ensure_collection("docs", 8)
    with pytest.raises(StoreError, match="in use by another process"):
        open_store(store_location).ensure_collection("docs", 8)


def test_unreachable_server_is_transient():
    store = QdrantClientStore(StoreLocation(kind="qdrant-server", url=f"http://127.0.0.1:{free_port()}"),
                              timeout=2)
    with pytest.raises(StoreUnavailableError, match="unreachable"):
        store.ensure_collection("docs", 8)


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 503

    def do_GET(self):  # noqa: N802
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": {"error": "nope"}}')

    do_PUT = do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status,error", [(503, StoreUnavailableError), (429, StoreUnavailableError),
                                          (400, StoreError), (403, StoreError)])
def test_server_answers_are_classified(status, error):
    handler = type("Handler", (_Answer,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        store = QdrantClientStore(StoreLocation(kind="qdrant-server",
                                                url=f"http://127.0.0.1:{server.server_address[1]}"),
                                  timeout=5)
        with pytest.raises(error) as caught:
            store.ensure_collection("docs", 8)
        if error is StoreError:
            assert not isinstance(caught.value, StoreUnavailableError)
    finally:
        server.shutdown()
