"""A search query's vector without torch: what lets a cold ``ingest search`` answer in ~1 s.

Of a cold hybrid search's ~7-9 s, ~5-6 s went to importing the model stack (sentence-transformers
→ transformers → torch) and loading the model, for 0.03 s of embedding one query. A process that
has not loaded the model embeds queries with what an earlier process kept in
``INGEST_CACHE_DIR``: the model's transformer converted for OpenVINO (the conversion the bf16
runtime keeps), compiled in **fp32**, fed by the model's own tokenizer (``tokenizers``, without
transformers), with the model's pooling and normalisation redone in numpy. Importing OpenVINO
and compiling the model take ~0.6 s.

What to redo — the tokenizer as the model truncates, the transformer's inputs, the pooling
mode — is the *recipe*, read from the loaded model by a process that
has it (``keep_query_encoder``) and kept beside the conversion only if its vectors match the
model's own fp32 vectors on fixed texts (the precision probe, a text past the model's length, one
with stray white space): cosine at least ``MIN_COSINE`` for every one. Both are fp32 and differ
in summation order only (measured: cosine 1 - 1e-7 or closer). A model this does not
reproduce — another pooling, a prompt, modules after pooling other than normalisation — fails
the check and its queries keep going through sentence-transformers.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Tokenizer

from tasks.core.openvino_runtime import (
    TOKEN_INPUTS,
    compile_config,
    conversion_folder,
    convert,
    openvino_installed,
    trace_example,
    unsupported_reason,
)

if TYPE_CHECKING:
    from tasks.core.embedding import Embedder

log = logging.getLogger(__name__)

RECIPE = "query.json"
RECIPE_FORMAT = 1
#: Every check text's cosine to the model's own fp32 vector must reach this (see the docstring).
MIN_COSINE = 0.99999
POOLING_MODES = ("mean", "cls", "max")


@dataclass(frozen=True)
class Recipe:
    """How the model turns a text into a vector, around its transformer."""

    #: The model's tokenizer (``tokenizers`` JSON), truncating where the model does, no padding.
    tokenizer: str
    #: The transformer's inputs, among ``input_ids``, ``attention_mask``, ``token_type_ids``.
    inputs: tuple[str, ...]
    pooling: str
    lowercase: bool

    def to_json(self) -> str:
        return json.dumps({"format": RECIPE_FORMAT, **asdict(self)})

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        data = json.loads(text)
        if data.pop("format", None) != RECIPE_FORMAT:
            raise ValueError("a recipe of another format")
        recipe = cls(**{**data, "inputs": tuple(data["inputs"])})
        if recipe.pooling not in POOLING_MODES or not set(recipe.inputs) <= TOKEN_INPUTS \
                or "input_ids" not in recipe.inputs:
            raise ValueError(f"an unusable recipe: pooling {recipe.pooling!r}, inputs {recipe.inputs}")
        return recipe


class QueryEncoder:
    """Query vectors from the model's OpenVINO conversion (fp32) and its ``Recipe``; thread-safe."""

    def __init__(self, folder: Path, recipe: Recipe, threads: int | None = None) -> None:
        import openvino as ov

        self.recipe = recipe
        self._tokenizer = Tokenizer.from_str(recipe.tokenizer)
        threads = threads or len(os.sched_getaffinity(0))
        self._compiled = ov.Core().compile_model(str(folder / "model.xml"), "CPU",
                                                 compile_config("fp32", threads))
        # One inference request inside the compiled model: calls take turns.
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        """Normalised float32 vectors of ``texts`` (as ``Embedder.embed`` makes them, whether or
        not the model normalises), one text at a time: queries come one by one, and alone a text
        has no padding to mask out."""
        vectors = []
        for text in texts:
            encoding = self._tokenizer.encode(text.lower() if self.recipe.lowercase else text)
            feed = {"input_ids": encoding.ids, "attention_mask": encoding.attention_mask,
                    "token_type_ids": encoding.type_ids}
            with self._lock:
                hidden = self._compiled({name: np.asarray([feed[name]], dtype=np.int64)
                                         for name in self.recipe.inputs})[0][0]
                vectors.append(_pool(np.asarray(hidden, dtype=np.float32), self.recipe.pooling))
        matrix = np.vstack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)
        matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        return matrix

    def embed_query(self, text: str) -> np.ndarray:
        """The vector of one query."""
        return self.embed([text])[0]


def _pool(hidden: np.ndarray, mode: str) -> np.ndarray:
    """One text's token vectors → its vector (all tokens are real: nothing is padded)."""
    if mode == "mean":
        return hidden.mean(axis=0)
    if mode == "cls":
        return hidden[0].copy()
    return hidden.max(axis=0)


def load_query_encoder(cache_dir: Path, location: str) -> QueryEncoder | None:
    """The query encoder kept for the model at ``location``, or ``None``: none kept yet, the model
    is not a local folder, OpenVINO is not installed, or what was kept cannot be read."""
    folder = conversion_folder(cache_dir, location)
    if folder is None or not (folder / RECIPE).is_file():
        return None
    try:
        return QueryEncoder(folder, Recipe.from_json((folder / RECIPE).read_text()))
    except Exception as exc:  # noqa: BLE001 (a damaged cache costs speed, never the search)
        log.warning("ignoring the query encoder kept in %s: %s: %s", folder, type(exc).__name__, exc)
        return None


def keep_query_encoder(reference: Embedder, cache_dir: Path) -> bool:
    """Make the query encoder of ``reference``'s model (an fp32 embedder), check it against
    ``reference`` and keep it for later processes; ``False`` (with the reason logged) when the
    model's queries cannot be embedded this way. Converts the model for OpenVINO if no process
    has (~2 s); otherwise ~1 s; nothing when one is kept already. Call it outside the model
    thread: the check embeds on it."""
    loaded = reference.loaded
    folder = conversion_folder(cache_dir, loaded.location)
    if folder is None or not openvino_installed():
        return False
    if (folder / RECIPE).is_file():
        return True
    try:
        recipe = loaded.thread.run(lambda: recipe_of(loaded.model))
        if recipe is None:
            return False
        import openvino as ov

        def conversion():
            example = trace_example(loaded.model)
            convert(ov.Core(), loaded.model[0], example, folder)
        if not (folder / "model.xml").is_file():
            loaded.thread.run(conversion)
        encoder = QueryEncoder(folder, recipe)
    except Exception as exc:  # noqa: BLE001 (only later searches' speed is at stake)
        log.warning("cannot make a query encoder without torch for %s: %s: %s", reference.name,
                    type(exc).__name__, exc)
        return False
    texts = check_texts(reference.max_tokens)
    counts = [len(reference.tokenizer.encode(t).ids) for t in texts]
    expected = reference.embed(texts, counts, batch_size=1)
    cosines = (encoder.embed(texts) * expected).sum(axis=1)
    if float(cosines.min()) < MIN_COSINE:
        log.info("queries of %s keep going through sentence-transformers: without torch their "
                 "vectors differ (cosine to the model's own min %.6f)", reference.name, cosines.min())
        return False
    if not _write(folder / RECIPE, recipe.to_json()):
        return False
    log.info("kept a query encoder without torch for %s in %s (cosine to the model's own min %.8f)",
             reference.name, folder, cosines.min())
    return True


def recipe_of(model) -> Recipe | None:
    """The recipe of a sentence-transformers ``model`` whose modules are a text transformer, a
    pooling of one of ``POOLING_MODES`` and at most a normalisation (which changes nothing here:
    every vector the pipeline makes is normalised); else ``None``."""
    reason = unsupported_reason(model)
    if reason:
        log.info("no query encoder without torch: %s", reason)
        return None
    modules = list(model)
    kinds = [type(m).__name__ for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or kinds[2:] not in ([], ["Normalize"]):
        log.info("no query encoder without torch for modules %s", kinds)
        return None
    pooling = modules[1].pooling_mode
    if pooling not in POOLING_MODES or getattr(model, "default_prompt_name", None):
        log.info("no query encoder without torch for pooling %r with a default prompt %r",
                 pooling, getattr(model, "default_prompt_name", None))
        return None
    tokenizer = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())
    # Where sentence-transformers truncates (its max_seq_length, not the tokenizer file's own).
    tokenizer.enable_truncation(max_length=int(model.max_seq_length))
    tokenizer.no_padding()
    example = trace_example(model)
    return Recipe(tokenizer=tokenizer.to_str(), inputs=tuple(example), pooling=pooling,
                  lowercase=bool(getattr(modules[0], "do_lower_case", False)))


def check_texts(max_tokens: int) -> list[str]:
    """The texts a recipe must reproduce: the precision probe's passages and queries, a text past
    the model's length (truncation), one with stray white space and capitals."""
    from tasks.core.precision import probe_texts

    texts = probe_texts()
    long = " ".join(texts[:16])
    while len(long.split()) < 2 * max_tokens:
        long += " " + long
    return texts + [long, "  Why ARE glacial lakes\tturquoise?\n", "x"]


def _write(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` whole or not at all (concurrent processes may race)."""
    staging = None
    try:
        handle, staging = tempfile.mkstemp(dir=path.parent, prefix=".staging-")
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(staging, path)
        return True
    except OSError as exc:
        if staging is not None:
            Path(staging).unlink(missing_ok=True)
        log.warning("cannot keep the query encoder in %s: %s", path.parent, exc)
        return False
