"""Queries embedded without torch (a cold search): the same vectors as the model's own, or none."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from tasks.core import query_encoder
from tasks.core.embedding import Embedder, load_model
from tasks.core.openvino_runtime import conversion_folder
from tasks.core.query_encoder import RECIPE, check_texts, keep_query_encoder, load_query_encoder
from tasks.core.scheduling import ModelThread
from tasks.core.settings import DEFAULT_MODEL

pytestmark = [pytest.mark.integration, pytest.mark.once]
pytest.importorskip("openvino")

QUERIES = ["why are glacial lakes turquoise?", "Höchstarbeitszeit pro Tag", "SQL group by having",
           "error 503", "a"]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_queries_embedded_without_torch_match_the_model(embedder, tmp_path):
    assert keep_query_encoder(embedder, tmp_path)
    folder = conversion_folder(tmp_path, embedder.loaded.location)
    recipe = json.loads((folder / RECIPE).read_text())
    assert (recipe["pooling"], recipe["lowercase"]) == ("mean", False)
    assert not list(folder.glob(".staging-*"))
    encoder = load_query_encoder(tmp_path, embedder.loaded.location)
    texts = QUERIES + check_texts(embedder.max_tokens)[:4]
    expected = embedder.embed(texts, [len(t) for t in texts], batch_size=1)
    assert _cosines(encoder.embed(texts), expected).min() >= 0.99999
    assert np.allclose(np.linalg.norm(encoder.embed(QUERIES), axis=1), 1.0, atol=1e-5)
    # Kept once: a second call finds it and checks nothing.
    assert keep_query_encoder(embedder, tmp_path)


def test_a_fresh_process_searches_without_importing_torch(embedder, tmp_path):
    """What a cold ``ingest search`` does: the model's stack is never imported, the vector is
    the model's own."""
    assert keep_query_encoder(embedder, tmp_path)
    script = (
        "import json, sys\n"
        "from tasks.core.resources import Resources\n"
        f"vector = Resources().query_embedder({DEFAULT_MODEL!r}).embed_query({QUERIES[0]!r})\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules)\n"
        "print(json.dumps({'heavy': heavy, 'vector': vector.tolist()}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**_env(), "INGEST_CACHE_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["heavy"] == []
    expected = embedder.embed_query(QUERIES[0])
    assert float(np.dot(result["vector"], expected)) >= 0.99999


def test_converting_the_model_prints_nothing(tmp_path):
    """A first run on a fresh install converts the model for OpenVINO; the tracer reads every
    attribute of the model, and transformers logged one of them (``loss_type=None …``) to
    standard error, above the run's table."""
    script = ("from tasks.core.resources import Resources\n"
              f"Resources().keep_query_encoder({DEFAULT_MODEL!r})\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**_env(), "INGEST_CACHE_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.rglob("model.xml")), "nothing was converted"
    assert "transformers" not in done.stderr, done.stderr


def test_openvino_reports_nothing_to_the_internet():
    """OpenVINO's conversion sends telemetry from a forked child (one hung on an OpenSSL lock
    inherited from a busy process's other thread); its own no-op stand-in is what it uses here."""
    script = ("import tasks.core.openvino_runtime\n"
              "import openvino.tools.ovc.telemetry_utils as used\n"
              "print(used.tm.__name__)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "openvino.tools.ovc.telemetry_stub"


def test_without_a_kept_encoder_the_model_embeds_and_keeps_one(tmp_path, monkeypatch):
    from tasks.core.resources import Resources

    monkeypatch.setenv("INGEST_CACHE_DIR", str(tmp_path))
    owner = Resources()
    first = owner.query_embedder(DEFAULT_MODEL)
    assert isinstance(first, Embedder)  # loaded the model, as before
    fresh = Resources()
    assert isinstance(fresh.query_embedder(DEFAULT_MODEL), query_encoder.QueryEncoder)
    assert owner.model_loads == 1 and fresh.model_loads == 0


def test_a_damaged_encoder_is_ignored(embedder, tmp_path, caplog):
    assert keep_query_encoder(embedder, tmp_path)
    folder = conversion_folder(tmp_path, embedder.loaded.location)
    (folder / RECIPE).write_text('{"format": 1, "pooling": "weighted"}')
    with caplog.at_level(logging.WARNING):
        assert load_query_encoder(tmp_path, embedder.loaded.location) is None
    assert "ignoring the query encoder" in caplog.text


def test_a_recipe_that_does_not_reproduce_the_model_is_not_kept(embedder, tmp_path, monkeypatch, caplog):
    """The check is what keeps a wrong vector out of searches: a recipe pooling differently
    from the model fails it."""
    real = query_encoder.recipe_of

    def wrong_pooling(model):
        from dataclasses import replace

        return replace(real(model), pooling="cls")

    monkeypatch.setattr(query_encoder, "recipe_of", wrong_pooling)
    with caplog.at_level(logging.INFO):
        assert not keep_query_encoder(embedder, tmp_path)
    assert "keep going through sentence-transformers" in caplog.text
    assert load_query_encoder(tmp_path, embedder.loaded.location) is None


def test_other_poolings_are_reproduced(tmp_path):
    """A model pooling by its first token, without normalising, saved to a folder of its own."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling

    base = load_model(DEFAULT_MODEL, ModelThread())
    model = SentenceTransformer(modules=[base.model[0], Pooling(base.dimension, pooling_mode="cls")],
                                device="cpu")
    model.save(str(tmp_path / "cls-model"))
    loaded = load_model(str(tmp_path / "cls-model"), ModelThread())
    reference = Embedder(name="cls-model", loaded=loaded)
    assert keep_query_encoder(reference, tmp_path / "cache")
    encoder = load_query_encoder(tmp_path / "cache", loaded.location)
    assert encoder.recipe.pooling == "cls"
    expected = reference.embed(QUERIES, [len(q) for q in QUERIES], batch_size=1)
    assert np.abs(encoder.embed(QUERIES) - expected).max() < 1e-4


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items()}
