"""Records, identities and configuration validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tasks.core.ids import config_fingerprint, point_id
from tasks.core.models import FileOutcome, Reason, RunSummary, Status
from tasks.core.settings import IngestParams, IngestSettings, PipelineConfig


def test_point_ids_are_deterministic_and_distinct():
    assert point_id("s3://b/a.pdf", 0) == point_id("s3://b/a.pdf", 0)
    ids = {point_id(src, i) for src in ("s3://b/a.pdf", "s3://b/b.pdf") for i in range(50)}
    assert len(ids) == 100


def test_config_fingerprint_follows_what_decides_the_points():
    base = dict(model="m", chunk_tokens=192, chunk_overlap=32)
    assert config_fingerprint(**base) == config_fingerprint(**base)
    assert config_fingerprint(**base) != config_fingerprint(**{**base, "chunk_tokens": 128})
    assert config_fingerprint(**base) != config_fingerprint(**{**base, "model": "other"})


@pytest.mark.parametrize("reason,status", [
    (Reason.UNSUPPORTED_TYPE, Status.SKIPPED), (Reason.EMPTY, Status.SKIPPED),
    (Reason.CORRUPT, Status.FAILED), (Reason.ENCRYPTED, Status.FAILED),
    (Reason.NO_TEXT, Status.FAILED), (Reason.SOURCE_UNAVAILABLE, Status.FAILED),
])
def test_rejection_status_follows_reason(reason, status):
    assert FileOutcome.rejected("x", reason, "d").status is status


def test_summary_totals():
    outcomes = [
        FileOutcome(source="b", status=Status.INDEXED, pages=3, chunks=7),
        FileOutcome(source="a", status=Status.INDEXED, chunks=2),
        FileOutcome(source="c", status=Status.UNCHANGED, reason=Reason.UNCHANGED, chunks=4),
        FileOutcome.rejected("d", Reason.CORRUPT, "bad"),
        FileOutcome.rejected("e", Reason.EMPTY, "empty"),
    ]
    summary = RunSummary.from_outcomes(outcomes, collection="c", seconds=2.0, run_id="r")
    assert [o.source for o in summary.files] == ["a", "b", "c", "d", "e"]
    t = summary.totals
    assert (t.files, t.indexed, t.unchanged, t.failed, t.skipped) == (5, 2, 1, 1, 1)
    # chunks: what the rows hold (the unchanged file's 4 too); embedded: this run's 9
    assert t.chunks == 13 and t.chunks_embedded == 9 and t.pages == 3 and t.chunks_per_second == 4.5
    dumped = summary.model_dump(mode="json")
    assert set(dumped["files"][0]) >= {"source", "status", "reason", "detail", "pages", "chunks", "seconds"}


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("QDRANT_URL", "http://127.0.0.1:6333")
    monkeypatch.setenv("QDRANT_API_KEY", "k-123")
    monkeypatch.setenv("INGEST_CHUNK_TOKENS", "128")
    monkeypatch.setenv("INGEST_COLLECTION", "papers")
    settings = IngestSettings()
    assert settings.qdrant_url == "http://127.0.0.1:6333"
    assert "k-123" not in repr(settings)  # SecretStr
    # The environment gives the defaults of the entry points' parameters, not of IngestParams.
    config = PipelineConfig.build(settings, IngestParams.with_defaults_from(settings, sources=["."]))
    assert config.store.url == "http://127.0.0.1:6333" and config.store.path is None
    assert config.store.kind == "qdrant-server"
    assert (config.chunk_tokens, config.collection) == (128, "papers")
    assert "k-123" not in config.model_dump_json()
    assert PipelineConfig.build(settings, IngestParams(sources=["."])).chunk_tokens == 192
    halved = IngestParams.with_defaults_from(IngestSettings(), sources=["."], chunk_tokens=40)
    assert (halved.chunk_tokens, halved.chunk_overlap) == (40, 20)  # the default overlap, halved


def test_edge_is_the_embedded_default_and_qdrant_local_is_explicit(monkeypatch, tmp_path):
    monkeypatch.delenv("INGEST_STORE")
    monkeypatch.setenv("INGEST_QDRANT_PATH", str(tmp_path / "q"))
    config = PipelineConfig.build(IngestSettings(), IngestParams(sources=["."], collection="x",
                                                                 chunk_tokens=100, chunk_overlap=10))
    assert (config.store.kind, config.store.path) == ("edge", str(tmp_path / "q" / "edge"))
    monkeypatch.setenv("INGEST_STORE", "qdrant-local")
    local = PipelineConfig.build(IngestSettings())
    assert (local.store.kind, local.store.path, local.store.url) == ("qdrant-local", str(tmp_path / "q"), None)
    assert (config.collection, config.chunk_tokens, config.chunk_overlap) == ("x", 100, 10)


@pytest.mark.parametrize("env,value", [("INGEST_CHUNK_TOKENS", "4"), ("INGEST_WORKERS", "0"),
                                       ("INGEST_CHUNK_OVERLAP", "150")])
def test_bad_settings_are_refused(monkeypatch, env, value):
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError):
        IngestSettings()


@pytest.mark.parametrize("kwargs", [dict(sources=[]), dict(sources=["."], chunk_tokens=64, chunk_overlap=40),
                                    dict(sources=["."], collection="bad name!")])
def test_bad_params_are_refused(kwargs):
    with pytest.raises(ValidationError):
        IngestParams(**kwargs)
