"""INGEST_EMBED_PRECISION's choice of runtime, as a rule: timings and vectors are given, so the
rule is tested on its own (the real runtimes: tests/integration/test_precision.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.core import precision
from tasks.core.precision import MEAN_COSINE, MIN_COSINE, choose_runtime, probe_texts


class Runtime:
    """What a runtime measured: seconds for the probe, and its vectors (fp32's, bent)."""

    def __init__(self, seconds: float, bend: float = 0.0, bent_rows: int = 1) -> None:
        self.seconds, self.bend, self.bent_rows = seconds, bend, bent_rows


def reference_vectors() -> np.ndarray:
    vectors = np.random.default_rng(7).normal(size=(len(probe_texts()), 8))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def vectors_of(runtime: Runtime) -> np.ndarray:
    """fp32's vectors with the first ``bent_rows`` turned so their cosine is 1 - bend."""
    vectors = reference_vectors().copy()
    for row in range(runtime.bent_rows):
        v = vectors[row]
        other = np.roll(v, 1) - v * (np.roll(v, 1) @ v)
        other /= np.linalg.norm(other)
        angle = np.arccos(1 - runtime.bend)
        vectors[row] = np.cos(angle) * v + np.sin(angle) * other
    return vectors


@pytest.fixture()
def measured(monkeypatch):
    """``choose_runtime`` over the given runtimes; returns (choice, the runtimes built)."""
    def choose(requested: str, runtimes: dict[str, Runtime], vectors: str | None = None):
        built = []
        monkeypatch.setattr(precision, "candidates", lambda name, model, requested, vectors=None: [
            r for r in runtimes if r != "fp32" and precision.wanted(r, requested, vectors)])
        monkeypatch.setattr(precision, "_timed", lambda embedders, texts: {
            name: (e.seconds, vectors_of(e)) for name, e in embedders.items()})

        def build(runtime):
            built.append(runtime)
            return runtimes[runtime]
        return choose_runtime("model", None, requested, build, vectors=vectors), built
    return choose


def test_fp32_is_the_reference_and_never_timed(measured):
    choice, built = measured("fp32", {"fp32": Runtime(1.0), "bf16": Runtime(0.1)})
    assert choice.runtime == "fp32" and built == []
    assert choice.why == "INGEST_EMBED_PRECISION=fp32"


def test_auto_keeps_the_fastest_runtime_that_passes_the_gate(measured):
    choice, _ = measured("auto", {"fp32": Runtime(1.0), "bf16-openvino": Runtime(0.5, bend=1e-5),
                                  "bf16": Runtime(0.7, bend=1e-5)})
    assert choice.runtime == "bf16-openvino"
    assert "2.00x fp32" in choice.why and "min 0.99999" in choice.why


def test_auto_refuses_a_faster_runtime_whose_worst_vector_fails_the_gate(measured):
    # One vector in 24 bent below the minimum: the mean still passes, the minimum does not.
    bent = Runtime(0.3, bend=(1 - MIN_COSINE) * 2)
    cosines = (reference_vectors() * vectors_of(bent)).sum(axis=1)
    assert cosines.mean() >= MEAN_COSINE - 1e-3 and cosines.min() < MIN_COSINE
    choice, _ = measured("auto", {"fp32": Runtime(1.0), "bf16-openvino": bent,
                                  "bf16": Runtime(0.6, bend=1e-6)})
    assert choice.runtime == "bf16"
    # Asked for bf16 by name, the user gets the fastest: the gate is auto's.
    assert measured("bf16", {"fp32": Runtime(1.0), "bf16-openvino": bent,
                             "bf16": Runtime(0.6, bend=1e-6)})[0].runtime == "bf16-openvino"


def test_auto_refuses_a_runtime_whose_mean_fails_the_gate(measured):
    drifting = Runtime(0.3, bend=5e-4, bent_rows=len(probe_texts()))  # every vector at 0.9995
    choice, _ = measured("auto", {"fp32": Runtime(1.0), "bf16": drifting})
    assert choice.runtime == "fp32" and "quality gate" in choice.why


def test_nothing_clearly_faster_means_fp32(measured):
    choice, _ = measured("auto", {"fp32": Runtime(1.0), "bf16-openvino": Runtime(0.9),
                                  "bf16": Runtime(1.4)})
    assert choice.runtime == "fp32"
    assert "best: bf16-openvino 1.11x fp32" in choice.why


def test_fp32_on_openvino_needs_a_smaller_lead_since_its_vectors_are_fp32s(measured):
    # 1.1x: not enough for bf16 (vectors that differ), enough for fp32's own vectors.
    choice, _ = measured("auto", {"fp32": Runtime(1.0), "bf16-openvino": Runtime(0.9, bend=1e-5),
                                  "fp32-openvino": Runtime(0.9, bend=1e-8)})
    assert choice.runtime == "fp32-openvino" and "fp32-openvino 1.11x fp32" in choice.why
    # Not faster at all: fp32 stays.
    assert measured("auto", {"fp32": Runtime(1.0), "fp32-openvino": Runtime(0.99)})[0].runtime == "fp32"
    # Faster but wrong is refused like any other runtime.
    bent = Runtime(0.5, bend=(1 - MIN_COSINE) * 2)
    assert measured("auto", {"fp32": Runtime(1.0), "fp32-openvino": bent})[0].runtime == "fp32"


def test_bf16_by_name_is_never_fp32_on_openvino(measured):
    choice, built = measured("bf16", {"fp32": Runtime(1.0), "fp32-openvino": Runtime(0.5),
                                      "bf16": Runtime(0.7, bend=1e-5)})
    assert choice.runtime == "bf16" and "fp32-openvino" not in built


def test_a_collection_of_fp32_vectors_is_continued_by_a_runtime_that_makes_them(measured):
    runtimes = {"fp32": Runtime(1.0), "bf16-openvino": Runtime(0.4, bend=1e-5),
                "fp32-openvino": Runtime(0.8, bend=1e-8)}
    assert measured("auto", runtimes)[0].runtime == "bf16-openvino"
    choice, built = measured("auto", runtimes, vectors="fp32")
    assert choice.runtime == "fp32-openvino" and "bf16-openvino" not in built
    assert choice.why.startswith("INGEST_EMBED_PRECISION=auto: fp32-openvino 1.25x fp32")


def test_the_probe_is_fixed_and_mixes_passages_and_queries():
    texts = probe_texts()
    assert texts == probe_texts() and len(texts) == 24
    assert sum(len(t) > 300 for t in texts) == 16 and sum(len(t) < 60 for t in texts) == 8


def test_without_native_bf16_only_fp32_on_openvino_is_timed(monkeypatch):
    # An AVX2 CPU: torch would emulate bf16 (0.19x fp32 measured), OpenVINO would run f32 under
    # the bf16 name — f32 on OpenVINO is worth timing under its own name.
    from tasks.core import embedding, openvino_runtime

    monkeypatch.setattr(precision, "unavailable_reason", lambda runtime, model: None)
    monkeypatch.setattr(embedding, "native_bf16", lambda: False)
    monkeypatch.setattr(openvino_runtime, "native_bf16", lambda: False)
    assert precision.candidates("model", None) == ["fp32-openvino"]
    built = []
    choice = choose_runtime("model", None, "bf16", built.append)  # bf16 asked: nothing to time
    assert choice.runtime == "fp32" and built == []  # not even fp32 is timed
    assert "no faster runtime to try here" in choice.why
    assert "OpenVINO lists no BF16 for this CPU" in choice.why and "no native bf16" in choice.why
    # Where OpenVINO has bf16 but torch does not, OpenVINO's runtimes are worth timing.
    monkeypatch.setattr(openvino_runtime, "native_bf16", lambda: True)
    assert precision.candidates("model", None) == ["bf16-openvino", "fp32-openvino"]
    # Without OpenVINO either, auto times nothing and says why.
    monkeypatch.setattr(precision, "unavailable_reason",
                        lambda runtime, model: "not installed" if "openvino" in runtime else None)
    monkeypatch.setattr(openvino_runtime, "native_bf16", lambda: False)
    choice = choose_runtime("model", None, "auto", built.append)
    assert choice.runtime == "fp32" and built == []
    assert "fp32-openvino: not installed" in choice.why
    assert precision.skip_reason("bf16-openvino", None) == "not installed"


def test_a_choice_already_made_is_reused_for_a_collection_of_its_vectors(monkeypatch):
    # A process (the API) that chose for a new collection, then meets one of fp32 vectors: the
    # fastest runtime of all makes fp32 vectors, so it is the fastest of those; nothing is timed.
    from tasks.core import resources as resources_module
    from tasks.core.resources import Resources

    owner = Resources()
    owner._runtimes[("model", "auto")] = precision.RuntimeChoice("fp32-openvino", "measured")
    monkeypatch.setattr(resources_module, "choose_runtime", lambda *a, **k: pytest.fail("timed again"))
    monkeypatch.setattr(owner, "model", lambda name: pytest.fail("loaded the model"))
    assert owner.runtime_choice("model", "auto", vectors="fp32").runtime == "fp32-openvino"
    # A bf16 choice says nothing about the fastest fp32 engine: that one is timed.
    other = Resources()
    other._runtimes[("model", "auto")] = precision.RuntimeChoice("bf16-openvino", "measured")
    monkeypatch.setattr(other, "model", lambda name: pytest.fail("loaded the model"))
    with pytest.raises(pytest.fail.Exception, match="loaded the model"):
        other.runtime_choice("model", "auto", vectors="fp32")


def test_the_runtimes_take_turns_on_the_probe():
    # Timed one after the other, a burst of other work (Prefect's server starting beside the
    # model) slows whichever runtime is timed then; taking turns pass by pass, it slows both.
    calls = []

    class Tokens:
        ids = [1, 2, 3]

    class Embedder:
        tokenizer = type("Tokenizer", (), {"encode": staticmethod(lambda text: Tokens)})

        def __init__(self, name: str) -> None:
            self.name = name

        def embed(self, texts, counts, batch_size):
            calls.append((self.name, len(texts)))
            return np.zeros((len(texts), 2))

    texts = probe_texts()
    timed = precision._timed({"fp32": Embedder("fp32"), "fp32-openvino": Embedder("ov")}, texts)
    assert set(timed) == {"fp32", "fp32-openvino"}
    assert [name for name, n in calls if n == len(texts)] == ["fp32", "ov", "fp32", "ov"]
    assert all(n == 2 for _, n in calls[:2])  # each warmed up before any timing
    assert all(seconds < float("inf") and vectors.shape == (len(texts), 2)
               for seconds, vectors in timed.values())


def test_openvino_compiles_with_a_small_shape_cache():
    # Padding-free batches bring new shapes nearly every batch: the plugin's default cache of
    # 5,000 shape-specific kernels only grew over a long run (see RUNTIME_CACHE_ENTRIES).
    from tasks.core.openvino_runtime import RUNTIME_CACHE_ENTRIES, compile_config

    for runtime_precision, hint in (("fp32", "f32"), ("bf16", "bf16")):
        config = compile_config(runtime_precision, 2)
        assert config["CPU_RUNTIME_CACHE_CAPACITY"] == RUNTIME_CACHE_ENTRIES == 100
        assert config["INFERENCE_PRECISION_HINT"] == hint and config["INFERENCE_NUM_THREADS"] == 2
