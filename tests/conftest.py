"""Shared fixtures: real components only (the bundled model, Qdrant on disk, moto's S3 server)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

# Before anything imports Prefect: an isolated home, no telemetry, no user configuration.
_PREFECT_HOME = tempfile.mkdtemp(prefix="ingest-tests-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
# What processes keep for later ones (the OpenVINO conversion): the session's own, not the user's.
_CACHE_DIR = tempfile.mkdtemp(prefix="ingest-tests-cache-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("PREFECT_PROFILES_PATH", None)

import pytest  # noqa: E402

DATA = Path(__file__).parent / "data"
MIXED = DATA / "mixed"
SAMPLES = Path(__file__).parent.parent / "samples"

# What every file of tests/data/mixed must end as: (status, reason).
MIXED_EXPECTED = {
    "alpine-lakes.pdf": ("indexed", "ok"),
    "heat-pumps.txt": ("indexed", "ok"),
    "cafe-utf16.txt": ("indexed", "ok"),
    "cafe-cp1252.txt": ("indexed", "ok"),
    "sourdough-really-a-pdf.txt": ("indexed", "ok"),
    "owner-password-only.pdf": ("indexed", "ok"),
    "encrypted.pdf": ("failed", "encrypted"),
    "scanned.pdf": ("failed", "no_text"),
    "corrupt.pdf": ("failed", "corrupt"),
    "binary.txt": ("failed", "undecodable"),
    "photo-named.pdf": ("skipped", "unsupported_type"),
    "picture.png": ("skipped", "unsupported_type"),
    "empty.txt": ("skipped", "empty"),
}


BACKENDS = ("edge", "qdrant-local")


def pytest_addoption(parser):
    parser.addoption("--store-backend", choices=BACKENDS, default=None,
                     help="run every test against this embedded backend (INGEST_STORE); by "
                          "default tests marked `store` run against each, the others against edge")


def pytest_generate_tests(metafunc):
    """Tests of the store's semantics (marker ``store``) run once per embedded backend: Qdrant
    Edge and qdrant-client's local mode (which stands in for a Qdrant server). A test marked
    ``own_backends`` opens the backends it is about itself (Edge's index, a migration from one
    to the other): run once per backend, it repeated itself (the autouse environment fixture
    asks for ``store_backend``, so every test of a ``store`` module would be parametrized)."""
    definition = metafunc.definition
    if ("store_backend" in metafunc.fixturenames and definition.get_closest_marker("store")
            and not definition.get_closest_marker("own_backends")
            and not metafunc.config.getoption("--store-backend")):
        metafunc.parametrize("store_backend", BACKENDS)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def store_backend(pytestconfig) -> str:
    """The embedded backend of a test (parametrized for tests marked ``store``)."""
    return pytestconfig.getoption("--store-backend") or "edge"


@pytest.fixture(autouse=True)
def _clean_ingest_env(monkeypatch, store_backend):
    """No test sees the developer's INGEST_*/QDRANT_* settings; the backend is the run's.
    OCR is off unless a test turns it on: the OCR tests cover it, and elsewhere it would only
    re-render the graphics-only sample scan in every run (seconds of low-priority CPU that a
    busy machine stretches to minutes). Embedding is fp32, the reference, unless a test asks
    for ``auto``: its choice depends on the CPU and on timings, which the precision tests
    cover; elsewhere it would make what a test compares depend on the machine's load."""
    for name in list(os.environ):
        if name.startswith(("INGEST_", "QDRANT_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("INGEST_STORE", store_backend)
    monkeypatch.setenv("INGEST_OCR", "off")
    monkeypatch.setenv("INGEST_EMBED_PRECISION", "fp32")
    monkeypatch.setenv("INGEST_CACHE_DIR", _CACHE_DIR)


@pytest.fixture(scope="session")
def tokenizer():
    from tasks.core.embedding import load_tokenizer
    from tasks.core.settings import DEFAULT_MODEL

    return load_tokenizer(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def embedder():
    from tasks.core.resources import resources
    from tasks.core.settings import DEFAULT_MODEL

    return resources().embedder(DEFAULT_MODEL)


def close_stores() -> None:
    """Close the stores this process holds (flushes them and releases their folder locks)."""
    from tasks.core.resources import resources

    resources().close_stores()


def get_store(location):
    """This process's handle on the store at ``location``."""
    from tasks.core.resources import resources

    return resources().store(location)


@pytest.fixture()
def store_path(tmp_path):
    """A fresh embedded store folder; open stores are closed afterwards (folder locks)."""
    path = tmp_path / "qdrant"
    yield path
    close_stores()


@pytest.fixture()
def store_location(store_path, store_backend):
    from tasks.core.settings import StoreLocation

    return StoreLocation.embedded(store_backend, store_path)


def create_edge_shard(store, collection: str, dim: int, sparse: tuple[str, ...] = ()) -> None:
    """An Edge shard as earlier versions made it: Edge's default memory placement and optimizer
    settings, the dense vector and the BM25 vectors named in ``sparse``."""
    from qdrant_edge import (
        Distance,
        EdgeConfig,
        EdgeShard,
        EdgeSparseVectorParams,
        EdgeVectorParams,
        Modifier,
    )

    folder = store._folder(collection)
    folder.mkdir(parents=True)
    EdgeShard.create(str(folder), EdgeConfig(  # closed: the store opens it as it finds it
        vectors=EdgeVectorParams(size=dim, distance=Distance.Cosine),
        sparse_vectors={name: EdgeSparseVectorParams(modifier=Modifier.Idf) for name in sparse} or None,
    )).close()


def create_pre_hybrid(store, collection: str, dim: int = 8, *, words: bool = False) -> None:
    """A collection as the pipeline built it before hybrid search: the dense vector only; with
    ``words``, as it built it before the n-gram vectors: dense and the words' BM25 vector."""
    from tasks.core.sparse import SPARSE_VECTOR
    from tasks.core.store.edge import EdgeStore

    if isinstance(store, EdgeStore):
        create_edge_shard(store, collection, dim, (SPARSE_VECTOR,) if words else ())
    else:
        from qdrant_client import models

        store.client.create_collection(collection, vectors_config=models.VectorParams(
            size=dim, distance=models.Distance.COSINE), sparse_vectors_config={
                SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)} if words else None)


def write_pre_grams(store, collection: str, points) -> None:
    """Points as the pipeline wrote them before the n-gram vectors: dense and words only."""
    from tasks.core.sparse import SPARSE_VECTOR
    from tasks.core.store.edge import EdgeStore

    if isinstance(store, EdgeStore):
        from qdrant_edge import Point, SparseVector, UpdateOperation

        store._shard(collection).update(UpdateOperation.upsert_points([Point(
            id=p.id, payload=p.payload, vector={"": p.vector, SPARSE_VECTOR: SparseVector(
                list(p.sparse.words.indices), list(p.sparse.words.values))}) for p in points]))
    else:
        from qdrant_client import models

        store.client.upsert(collection, wait=True, points=[models.PointStruct(
            id=p.id, payload=p.payload, vector={"": p.vector, SPARSE_VECTOR: models.SparseVector(
                indices=list(p.sparse.words.indices), values=list(p.sparse.words.values))})
            for p in points])


def wait_until(check, *, timeout: float, interval: float = 0.3, what: str = "condition"):
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds. Waits
    are on conditions with deadlines fit for a busy machine, never fixed sleeps."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint():
    """moto's S3 server over HTTP on 127.0.0.1; s3fs reaches it through AWS_ENDPOINT_URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                             "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing",
                      AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture()
def s3_bucket(moto_endpoint):
    """A new, empty bucket per test; returns its name."""
    import uuid

    from tasks.core.sources import filesystem

    fs = filesystem("s3")
    name = f"bucket-{uuid.uuid4().hex[:12]}"
    fs.mkdir(name)
    fs.invalidate_cache()
    return name


def upload_folder(bucket: str, prefix: str, folder: Path) -> None:
    """Put every file of ``folder`` (hidden ones too) under ``s3://bucket/prefix/``."""
    from tasks.core.sources import filesystem

    fs = filesystem("s3")
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            fs.pipe(f"{bucket}/{prefix}/{path.relative_to(folder).as_posix()}", path.read_bytes())
    fs.invalidate_cache()


def make_config(store_path, settings=None, **params):
    """A PipelineConfig for collection 'docs' in an embedded store at ``store_path``."""
    from tasks.core.settings import IngestParams, IngestSettings, PipelineConfig

    settings = settings or IngestSettings(qdrant_path=store_path)
    return PipelineConfig.build(settings, IngestParams(sources=["."], collection="docs", **params))


def niceness(stat_path: str) -> int:
    """The nice value of a process or thread, from its ``/proc/.../stat`` (field 19; the name
    in parentheses may hold spaces, so fields are counted after its closing parenthesis)."""
    with open(stat_path) as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[16])


def run_all(config, sources, *, include=(), group=8):
    """One ingest run without Prefect: prepare, then groups of files through the whole chain."""
    from tasks.core.resources import resources
    from tasks.core.sources import discover_files
    from tasks.core.stages.chain import run_chain
    from tasks.core.stages.prepare import prepare

    owner = resources()
    config = prepare(config, owner)
    files = list(discover_files(sources, include))
    outcomes = []
    for begin in range(0, len(files), group):
        outcomes += run_chain(files[begin:begin + group], config, owner).outcomes
    return {file.name: outcome for file, outcome in zip(files, outcomes)}


def snapshot(config) -> dict:
    """Every point as {id: (payload without ingested_at, vector)}."""
    return {p.id: ({k: v for k, v in p.payload.items() if k != "ingested_at"}, p.vector)
            for p in get_store(config.store).iter_points(config.collection, with_vectors=True)}


def assert_same_store(actual: dict, expected: dict) -> None:
    """Same point IDs, same payloads, vectors equal up to float noise."""
    import numpy as np

    assert set(actual) == set(expected)
    for point_id, (payload, vector) in expected.items():
        assert actual[point_id][0] == payload, point_id
        assert np.allclose(actual[point_id][1], vector, atol=1e-4), point_id


# A maintenance log as a scanner leaves it: page 1 typed with a text layer, pages 2 and 3 images
# only. The part code and the interval on page 2 are in no other test document.
SCAN_PAGES = (
    ("Plant maintenance log, volume 4. This volume collects the maintenance sheets of the "
     "cooling water circuit: pumps, valves and the heat exchanger. Each sheet names the part, "
     "the interval and the person responsible for the work.\n\nSheets are filed in the order "
     "of the circuit, from the intake screens to the outfall. A sheet that is out of date is "
     "crossed out and kept, so that the history of every part can be traced back.", False),
    ("Maintenance sheet for circulation pump VX-3318.\n\nThe mechanical seals of pump VX-3318 "
     "are replaced every 1,200 operating hours. Record the hours counter reading on the sheet "
     "and return the old seals to the workshop for inspection.\n\nBefore the work, close both "
     "isolation valves and drain the pump casing. After it, run the pump for ten minutes and "
     "check the seal faces for drips.", True),
    ("Fiche d'entretien de l'échangeur de chaleur.\n\nLes plaques de l'échangeur sont "
     "nettoyées chaque année au printemps ; vérifiez les joints et notez l'état des surfaces.",
     True),
)


from bench.ocr import cer  # noqa: E402,F401 (the benchmark's measure, shared with the tests)


def scanned_pdf(path: Path, pages=SCAN_PAGES, **scan) -> Path:
    """A PDF of ``pages`` (``(text, scanned)``), scanned pages as images (``bench.corpus.Scan``)."""
    from bench.corpus import Scan, write_scanned_pdf

    return write_scanned_pdf(path, list(pages), scan=Scan(**scan))
