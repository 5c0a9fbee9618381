"""The whole per-file chain with real parts: model, Qdrant on disk, local files and S3."""

from __future__ import annotations

import shutil

import pytest

from tasks.core.ids import point_id
from tasks.core.models import Status
from tasks.core.process import prepare_store, processor_for
from tasks.core.settings import IngestParams, IngestSettings, PipelineConfig
from tasks.core.sources import discover_files
from tasks.core.store import get_store
from tests.conftest import MIXED, MIXED_EXPECTED, SAMPLES, upload_folder

pytestmark = pytest.mark.integration


def make_config(store_path, **params) -> PipelineConfig:
    settings = IngestSettings(qdrant_path=store_path)
    return PipelineConfig.build(settings, IngestParams(sources=["."], collection="docs", **params))


def run_all(config, sources, **kwargs):
    prepare_store(config)
    processor = processor_for(config)
    return {f.name: processor.process(f) for f in discover_files(sources, **kwargs)}


def stored(config):
    records, _ = get_store(config.store).client.scroll(config.collection, limit=10_000)
    return {str(r.id): r.payload for r in records}


@pytest.mark.parametrize("where", ["local", "s3"])
def test_mixed_batch_outcomes(store_path, where, request):
    config = make_config(store_path)
    if where == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        upload_folder(bucket, "batch", MIXED)
        sources = [f"s3://{bucket}/batch/"]
    else:
        sources = [str(MIXED)]
    outcomes = run_all(config, sources)
    assert {name: (o.status.value, o.reason.value) for name, o in outcomes.items()} == MIXED_EXPECTED
    points = stored(config)
    indexed = {o.source: o.chunks for o in outcomes.values() if o.status is Status.INDEXED}
    assert set(points) == {point_id(src, i) for src, n in indexed.items() for i in range(n)}
    guide = [p for p in points.values() if p["file_name"] == "alpine-lakes.pdf"]
    covered = {n for p in guide for n in range(p["page_start"], p["page_end"] + 1)}
    assert covered == {1, 2, 3, 4}
    sample = guide[0]
    assert set(sample) >= {"text", "source", "file_name", "page_start", "page_end", "chunk_index",
                           "content_sha256", "model", "ingested_at"}
    assert sample["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert outcomes["alpine-lakes.pdf"].pages == 4


def test_rerun_is_unchanged_overwrite_reembeds_and_changes_replace(store_path, tmp_path):
    folder = tmp_path / "docs"
    shutil.copytree(SAMPLES, folder)
    config = make_config(store_path)
    first = run_all(config, [str(folder)])
    before = stored(config)
    again = run_all(config, [str(folder)])
    assert {o.status for o in again.values()} <= {Status.UNCHANGED, Status.FAILED}
    assert again["heat-pumps.txt"].chunks == first["heat-pumps.txt"].chunks
    assert stored(config) == before

    forced = run_all(make_config(store_path, overwrite=True), [str(folder)])
    assert forced["heat-pumps.txt"].status is Status.INDEXED
    assert set(stored(config)) == set(before)

    # A file that shrinks keeps exactly its new chunks.
    (folder / "heat-pumps.txt").write_text("Heat pumps move heat. That is all.\n")
    changed = run_all(config, [str(folder)])
    assert changed["heat-pumps.txt"].status is Status.INDEXED and changed["heat-pumps.txt"].chunks == 1
    uri = (folder / "heat-pumps.txt").as_uri()
    mine = {i for i, p in stored(config).items() if p["source"] == uri}
    assert mine == {point_id(uri, 0)}


def test_limits_are_settings(store_path):
    settings = IngestSettings(qdrant_path=store_path, max_file_mb=0.001, max_pages=3)
    config = PipelineConfig.build(settings, IngestParams(sources=["."], collection="docs"))
    outcomes = run_all(config, [str(MIXED)], include=["alpine-lakes.pdf", "heat-pumps.txt"])
    assert outcomes["alpine-lakes.pdf"].reason.value == "too_large"
    assert outcomes["heat-pumps.txt"].status is Status.INDEXED  # 935 bytes < 1048 bytes
    settings = IngestSettings(qdrant_path=store_path, max_file_mb=0.0005)
    config = PipelineConfig.build(settings, IngestParams(sources=["."], collection="docs"))
    outcomes = run_all(config, [str(MIXED)], include=["heat-pumps.txt"])
    assert outcomes["heat-pumps.txt"].reason.value == "too_large"
