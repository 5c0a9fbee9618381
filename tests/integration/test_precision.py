"""INGEST_EMBED_PRECISION with the real model: what ``auto`` chooses here, the rule that an
existing collection keeps the runtime it was built with, and the OpenVINO conversion kept for
later processes."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from tasks.core import precision
from tasks.core.models import Status
from tasks.core.resources import Resources, resources
from tasks.core.settings import DEFAULT_MODEL, IngestSettings
from tests.conftest import SAMPLES, close_stores, get_store, make_config, run_all

pytestmark = pytest.mark.integration


@pytest.fixture()
def folder(tmp_path):
    path = tmp_path / "docs"
    path.mkdir()
    for name in ("heat-pumps.txt", "notes-torrefaction-cp1252.txt"):
        shutil.copy(SAMPLES / name, path / name)
    return path


@pytest.fixture(autouse=True)
def _own_choices(monkeypatch):
    """Choices made under a patched rule stay in this test (the process's owner keeps them)."""
    monkeypatch.setattr(resources(), "_runtimes", {})


def take_autocast() -> None:
    """``INGEST_EMBED_PRECISION=bf16`` runs torch autocast in this test, even where it is slow,
    without the trial that would find out: where the CPU emulates bf16, timing it on the probe
    costs ~20 s, and the rules under test are about what a collection records."""
    resources()._runtimes[(DEFAULT_MODEL, "bf16")] = precision.RuntimeChoice(
        "bf16", "INGEST_EMBED_PRECISION=bf16: torch autocast, set by the test")


def config_for(tmp_path, monkeypatch, precision_setting: str, **params):
    monkeypatch.setenv("INGEST_EMBED_PRECISION", precision_setting)
    return make_config(tmp_path / "store", IngestSettings(qdrant_path=tmp_path / "store"), **params)


def test_auto_chooses_a_measured_runtime_whose_vectors_pass_the_gate(monkeypatch):
    owner = resources()
    fresh = Resources()  # its own choice, timed anew; the model is shared
    monkeypatch.setattr(fresh, "model", owner.model)
    choice = fresh.runtime_choice(DEFAULT_MODEL, "auto")
    assert choice.runtime in {"fp32", "bf16", "fp32-openvino", "bf16-openvino"}
    assert choice.why.startswith("INGEST_EMBED_PRECISION=auto: ")
    # The runtimes the probe built and did not pick are let go (an OpenVINO one holds its
    # compiled model and buffers): only the choice and fp32, the loaded model, stay.
    assert {runtime for _, runtime in fresh._embedders} <= {choice.runtime, "fp32"}
    if choice.runtime != "fp32":  # the probe's vectors, measured again: they pass the gate
        texts = precision.probe_texts()
        counts = [len(owner.model(DEFAULT_MODEL).tokenizer.encode(t).ids) for t in texts]
        exact = owner.embedder(DEFAULT_MODEL).embed(texts, counts, batch_size=16)
        fast = fresh.embedder(DEFAULT_MODEL, choice.runtime).embed(texts, counts, batch_size=16)
        cosines = (exact * fast).sum(axis=1)
        assert cosines.min() >= precision.MIN_COSINE and cosines.mean() >= precision.MEAN_COSINE


@pytest.mark.store
def test_an_existing_collection_keeps_the_runtime_it_was_built_with(tmp_path, monkeypatch, folder):
    # Built with bf16 (torch autocast) on purpose...
    take_autocast()
    built = config_for(tmp_path, monkeypatch, "bf16")
    first = run_all(built, [str(folder)])
    assert {o.status for o in first.values()} == {Status.INDEXED}
    close_stores()
    # ... then run under the default: nothing is timed, nothing re-embedded.
    chooses = Resources.runtime_choice

    def no_timing(self, name, setting):
        assert setting != "auto", "auto timed runtimes on a built collection"
        return chooses(self, name, setting)
    monkeypatch.setattr(Resources, "runtime_choice", no_timing)
    again = run_all(config_for(tmp_path, monkeypatch, "auto"), [str(folder)])
    assert {o.status for o in again.values()} == {Status.UNCHANGED}
    from tasks.core.stages.prepare import config_runtime

    choice = config_runtime(config_for(tmp_path, monkeypatch, "auto"), resources())
    assert choice.runtime == "bf16" and "collection 'docs' was built with it" in choice.why
    close_stores()
    # Switching on purpose: an explicit setting re-embeds every file with it.
    switched = run_all(config_for(tmp_path, monkeypatch, "fp32"), [str(folder)])
    assert {o.status for o in switched.values()} == {Status.UPDATED}
    store = get_store(built.store)
    assert store.recorded_runtime("docs") == "fp32"
    assert {p.payload["embed_precision"] for p in store.iter_points("docs", fields=["embed_precision"])} == {"fp32"}
    close_stores()


@pytest.mark.store
def test_fp32_vectors_are_continued_on_either_engine_without_re_embedding(tmp_path, monkeypatch, folder,
                                                                          caplog):
    pytest.importorskip("openvino")
    # Built with fp32 on OpenVINO (what auto takes where it is the fastest)...
    resources()._runtimes[(DEFAULT_MODEL, "auto")] = precision.RuntimeChoice("fp32-openvino",
                                                                             "set by the test")
    built = config_for(tmp_path, monkeypatch, "auto")
    first = run_all(built, [str(folder)])
    assert {o.status for o in first.values()} == {Status.INDEXED}
    store = get_store(built.store)
    assert store.recorded_runtime("docs") == "fp32-openvino"
    recorded = {(p.payload["embed_precision"], p.payload["embed_backend"])
                for p in store.iter_points("docs", fields=["embed_precision", "embed_backend"])}
    assert recorded == {("fp32", "openvino")}
    close_stores()
    # ... then by a process without OpenVINO: fp32 on torch makes the same vectors (the same
    # fingerprint), so nothing is re-embedded and nothing warns. (Another process: none of
    # this one's choices.)
    resources()._runtimes.clear()
    monkeypatch.setattr(precision, "unavailable_reason",
                        lambda runtime, model: "not installed" if "openvino" in runtime else None)
    with caplog.at_level(logging.WARNING):
        again = run_all(config_for(tmp_path, monkeypatch, "auto"), [str(folder)])
    assert {o.status for o in again.values()} == {Status.UNCHANGED}
    assert "re-embedded" not in caplog.text
    from tasks.core.stages.prepare import config_runtime

    choice = config_runtime(config_for(tmp_path, monkeypatch, "auto"), resources())
    assert choice.runtime == "fp32" and "a collection of fp32 vectors" in choice.why
    assert "fp32-openvino: not installed" in choice.why
    close_stores()
    # Explicit fp32 (torch, the reference) leaves the files as they are too.
    explicit = run_all(config_for(tmp_path, monkeypatch, "fp32"), [str(folder)])
    assert {o.status for o in explicit.values()} == {Status.UNCHANGED}
    close_stores()


@pytest.mark.store
def test_auto_chooses_again_when_the_recorded_runtime_cannot_run_here(tmp_path, monkeypatch, folder, caplog):
    take_autocast()
    run_all(config_for(tmp_path, monkeypatch, "bf16"), [str(folder)])
    close_stores()
    monkeypatch.setattr("tasks.core.stages.prepare.unavailable_reason",
                        lambda runtime, model: "not on this machine" if runtime == "bf16" else None)
    monkeypatch.setattr(Resources, "runtime_choice",
                        lambda self, name, setting: precision.RuntimeChoice("fp32", "measured"))
    with caplog.at_level(logging.WARNING):
        outcomes = run_all(config_for(tmp_path, monkeypatch, "auto"), [str(folder)])
    assert {o.status for o in outcomes.values()} == {Status.UPDATED}
    assert "was built with bf16, which this process cannot run (not on this machine)" in caplog.text
    close_stores()


def test_an_empty_store_has_no_recorded_runtime(tmp_path):
    store = get_store(make_config(tmp_path / "store").store)
    assert store.recorded_runtime("nothing-here") is None
    close_stores()


def test_the_openvino_conversion_is_kept_for_later_processes(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    import openvino

    from tasks.core.embedding import make_embedder

    loaded = resources().model(DEFAULT_MODEL)
    texts = ["glacial lakes are turquoise", "the pump seals are replaced every 2,000 hours"]
    counts = [8, 12]
    first = make_embedder(DEFAULT_MODEL, loaded, "bf16-openvino", cache_dir=tmp_path)
    kept = list((tmp_path / "openvino").glob("*/model.xml"))
    assert len(kept) == 1 and not list((tmp_path / "openvino").glob(".staging-*"))
    monkeypatch.setattr(openvino, "convert_model", lambda *a, **k: pytest.fail("converted again"))
    second = make_embedder(DEFAULT_MODEL, loaded, "bf16-openvino", cache_dir=tmp_path)
    assert np.allclose(first.embed(texts, counts, batch_size=2), second.embed(texts, counts, batch_size=2), atol=1e-6)
    # A damaged entry is converted again, not fatal.
    kept[0].write_text("not a model")
    monkeypatch.undo()
    third = make_embedder(DEFAULT_MODEL, loaded, "bf16-openvino", cache_dir=tmp_path)
    assert np.allclose(first.embed(texts, counts, batch_size=2), third.embed(texts, counts, batch_size=2), atol=1e-6)
