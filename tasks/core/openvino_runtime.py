"""OpenVINO as the runtime of a sentence-transformers model's transformer (the fast paths).

On CPUs with native bf16 (AVX512-BF16, AMX), OpenVINO's fused bf16 kernels ran the default model
1.94x torch fp32 here (`make bench`), against 1.49x for torch's own bf16 autocast, with the same
cosine to fp32 (0.99998). In f32 it computes what torch does (cosine 0.9999999 at worst over 900
real chunks), a whole run 1.09-1.17x faster on an AVX2 EPYC without bf16. Only the transformer
runs in OpenVINO; tokenisation and every module after it
(pooling, dense layers, normalisation) stay the model's own sentence-transformers code, so any
model whose first module is a text ``Transformer`` works. sentence-transformers' own OpenVINO
backend needs ``optimum-intel``, which cannot be installed beside transformers 5.x; the plain
``openvino`` runtime (extra ``[fast]``) has no such pin.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from tasks.core.errors import ModelError
from tasks.core.token_inputs import TOKEN_INPUTS

log = logging.getLogger(__name__)

# OpenVINO's model conversion reports its use to Google Analytics unless a file in the user's
# home says no: from a child it *forks*, which opens an HTTPS connection. Forked from this
# multithreaded process, a child once inherited an OpenSSL lock another thread held and hung
# for ever — an orphan holding its parent's standard output (a busy CI's `ingest api` never
# reached end of file). Nothing here may reach the internet: with the package unimportable,
# OpenVINO uses its own no-op stand-in (``openvino.tools.ovc.telemetry_stub``). Set before any
# ``import openvino`` of this process (they all come through this module).
sys.modules.setdefault("openvino_telemetry", None)

_HINTS = {"bf16": "bf16", "fp32": "f32"}
#: Entries of the CPU plugin's cache of kernels made for given input shapes (its default:
#: 5,000; the key is the plugin's own, the usual cure for its growth under dynamic shapes).
#: Batches are planned padding-free, so nearly every batch brings shapes of its own, which seldom
#: come back: the default cache only grew. 15,000 real chunks embedded in 40 random groups,
#: twice each: anonymous memory +106 and +122 MB by default, +72 and +73 MB at 100 entries,
#: no slower (391 against 407 s on the quiet pair).
RUNTIME_CACHE_ENTRIES = 100


def openvino_installed() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether OpenVINO lists BF16 among this CPU's capabilities. Without it a bf16 hint runs
    the model in f32 (vectors fp32's, measured: cosine 1.000000) — not what ``bf16-openvino``
    stands for. Unknown (no ``openvino``, no answer): ``True``, and timing decides."""
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 (a query of capabilities must not fail a run)
        return True


def unsupported_reason(model) -> str | None:
    """Why ``model`` cannot run its transformer in OpenVINO, or ``None`` if it can."""
    if not openvino_installed():
        return "the 'openvino' package is not installed (extra [fast])"
    first = model[0] if len(model) else None
    if type(first).__name__ != "Transformer" or not hasattr(first, "model"):
        return f"its first module is {type(first).__name__}, not a text Transformer"
    modalities = getattr(first, "modality_config", {})
    text = modalities.get("text", {}) if isinstance(modalities, dict) else {}
    if set(modalities) != {"text"} or text.get("method") != "forward" \
            or text.get("method_output_name") != "last_hidden_state":
        return f"its transformer is not a plain text encoder ({modalities})"
    return None


class OpenVinoTransformer:
    """A sentence-transformers model whose transformer runs compiled in OpenVINO.

    Built once per process (conversion takes ~1-2 s); ``encode`` is not thread-safe: the
    caller holds the model's lock, as for torch.
    """

    def __init__(self, model, precision: str, threads: int, cache: Path | None = None) -> None:
        reason = unsupported_reason(model)
        if reason:
            raise ModelError(f"cannot run the model in OpenVINO: {reason}")
        import openvino as ov

        self.model = model
        self.transformer = model[0]
        example = trace_example(model)
        self.input_names = list(example)
        core = ov.Core()
        try:
            converted = convert(core, self.transformer, example, cache)
            self.compiled = core.compile_model(converted, "CPU", compile_config(precision, threads))
        except Exception as exc:
            raise ModelError(f"cannot compile the model for OpenVINO: {type(exc).__name__}: {exc}") from exc

    def encode(self, texts: list[str]) -> np.ndarray:
        """Sentence embeddings of ``texts`` (one batch), as the model's own modules make them."""
        return self.encode_features(self.model.preprocess(texts))

    def encode_features(self, features: dict) -> np.ndarray:
        """Sentence embeddings of one batch of the model's input features (token tensors)."""
        import torch

        hidden = self.compiled({n: features[n].numpy() for n in self.input_names})[0]
        features[self.transformer.module_output_name] = torch.from_numpy(np.asarray(hidden, dtype=np.float32))
        with torch.inference_mode():
            for module in list(self.model)[1:]:
                features = module(features)
        return features["sentence_embedding"].float().numpy()


def trace_example(model) -> dict:
    """Token tensors to trace ``model``'s transformer with, by input name: what its tokenizer
    makes of two texts, limited to what the transformer's ``forward`` takes."""
    import torch

    example = model.preprocess(["an example sentence", "and a second, longer example sentence"])
    accepted = inspect.signature(model[0].model.forward).parameters
    names = [name for name, value in example.items()
             if isinstance(value, torch.Tensor) and name in accepted]
    if not set(names) <= TOKEN_INPUTS or "input_ids" not in names:
        raise ModelError(f"cannot run the model in OpenVINO: inputs {names}")
    return {name: example[name] for name in names}


def compile_config(precision: str, threads: int) -> dict:
    """How the model is compiled: ``precision`` (``bf16``, ``fp32``), one request at a time on
    ``threads`` threads, and a small cache of shape-specific kernels (``RUNTIME_CACHE_ENTRIES``)."""
    return {"INFERENCE_PRECISION_HINT": _HINTS[precision],
            "PERFORMANCE_HINT": "LATENCY",  # one request at a time, on every core
            "INFERENCE_NUM_THREADS": threads,
            "CPU_RUNTIME_CACHE_CAPACITY": RUNTIME_CACHE_ENTRIES}


def convert(core, transformer, example: dict, cache: Path | None):
    """The OpenVINO model of ``transformer`` (a sentence-transformers ``Transformer``): the one
    kept in ``cache`` by an earlier process, else converted from torch by tracing it on
    ``example`` (token tensors by input name) and kept there."""
    import openvino as ov
    import torch

    converted = _cached(core, cache / "model.xml") if cache is not None else None
    if converted is None:
        wrapper = _last_hidden_state_module(transformer.model).eval()
        with torch.no_grad(), warnings.catch_warnings(), _transformers_quiet():
            warnings.simplefilter("ignore")  # tracer warnings about shape-dependent branches
            converted = ov.convert_model(wrapper, example_input=example)
        if cache is not None:
            _keep(converted, cache)
    return converted


@contextlib.contextmanager
def _transformers_quiet():
    """transformers' own log below errors off for a while. Tracing reads every attribute of the
    model, ``loss_function`` (a training property) too, which logs ``loss_type=None was set in
    the config but it is unrecognized`` to standard error: the one line a first run on a fresh
    install printed before its table."""
    library = logging.getLogger("transformers")
    level = library.level
    library.setLevel(logging.ERROR)
    try:
        yield
    finally:
        library.setLevel(level)


def _last_hidden_state_module(model):
    """A torch module mapping token tensors to the transformer's last hidden state."""
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask=None, token_type_ids=None):
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask,
                      "token_type_ids": token_type_ids}
            return self.model(**{k: v for k, v in inputs.items() if v is not None},
                              return_dict=True).last_hidden_state

    return LastHiddenState()


def conversion_folder(cache_dir: Path, location: str) -> Path | None:
    """Where the conversion of the model at ``location`` is kept under ``cache_dir``, or ``None``
    when the model is not a local folder (nothing to key a cache on)."""
    key = conversion_key(location)
    return cache_dir / "openvino" / key if key else None


def conversion_key(location: str) -> str | None:
    """What identifies a conversion of the model at ``location`` (a folder): its files' names,
    sizes and modification times, and the versions of everything that converts it. ``None``
    when the model is not a local folder.

    The versions come from the installed packages' metadata, not their modules: a process that
    only reads the conversion (a cold search) must find it without importing torch (~4 s).
    """
    folder = Path(location)
    if not folder.is_dir():
        return None
    from importlib.metadata import PackageNotFoundError, version

    files = sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in folder.rglob("*") if p.is_file())
    try:
        versions = {name: version(name) for name in ("openvino", "torch", "transformers")}
    except PackageNotFoundError:
        return None
    spec = {"files": files, "folder": str(folder.resolve()), **versions, "format": 1}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def _cached(core, xml: Path):
    """A conversion kept by an earlier process, or ``None`` (missing or unreadable)."""
    if not xml.is_file():
        return None
    try:
        return core.read_model(str(xml))
    except Exception as exc:  # a damaged cache entry is converted again, not fatal
        log.warning("ignoring the cached OpenVINO model %s: %s", xml, exc)
        return None


def _keep(converted, folder: Path) -> None:
    """Save a conversion for later processes (~2 s of tracing each): written aside, then renamed
    into place, so concurrent processes never read half a file; failures only cost the cache."""
    import openvino as ov

    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".staging-"))
        # As converted: save_model's default halves the weights to fp16, which moves the vectors.
        ov.save_model(converted, str(staging / "model.xml"), compress_to_fp16=False)
        try:
            os.rename(staging, folder)
        except OSError:  # another process got there first
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        log.warning("cannot keep the OpenVINO model in %s: %s", folder.parent, exc)
