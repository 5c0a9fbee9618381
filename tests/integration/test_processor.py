"""The whole per-file chain with real parts: model, Qdrant on disk, local files and S3."""

from __future__ import annotations

import pytest

from tasks.core.ids import point_id
from tasks.core.models import Status
from tasks.core.settings import IngestSettings
from tests.conftest import MIXED, MIXED_EXPECTED, get_store, make_config, run_all, upload_folder

pytestmark = [pytest.mark.integration, pytest.mark.store]


def stored(config):
    return {p.id: p.payload for p in get_store(config.store).iter_points(config.collection)}


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


def test_limits_are_settings(store_path):
    settings = IngestSettings(qdrant_path=store_path, max_file_mb=0.001, max_pages=3)
    config = make_config(store_path, settings)
    outcomes = run_all(config, [str(MIXED)], include=["alpine-lakes.pdf", "heat-pumps.txt"])
    assert outcomes["alpine-lakes.pdf"].reason.value == "too_large"
    assert outcomes["heat-pumps.txt"].status is Status.INDEXED  # 935 bytes < 1048 bytes
    settings = IngestSettings(qdrant_path=store_path, max_file_mb=0.0005)
    config = make_config(store_path, settings).model_copy(update={"collection": "fresh"})
    outcomes = run_all(config, [str(MIXED)], include=["heat-pumps.txt"])
    assert outcomes["heat-pumps.txt"].reason.value == "too_large"
