"""OpenVINO as the runtime of a sentence-transformers model's transformer (the bf16 fast path).

On CPUs with native bf16 (AVX512-BF16, AMX), OpenVINO's fused bf16 kernels ran the default model
1.94x torch fp32 here (`make bench`), against 1.49x for torch's own bf16 autocast, with the same cosine to fp32
(0.99998). Only the transformer runs in OpenVINO; tokenisation and every module after it
(pooling, dense layers, normalisation) stay the model's own sentence-transformers code, so any
model whose first module is a text ``Transformer`` works. sentence-transformers' own OpenVINO
backend needs ``optimum-intel``, which cannot be installed beside transformers 5.x; the plain
``openvino`` runtime (extra ``[fast]``) has no such pin.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np

from tasks.core.errors import ModelError

_HINTS = {"bf16": "bf16", "fp32": "f32"}
TOKEN_INPUTS = frozenset({"input_ids", "attention_mask", "token_type_ids"})


def openvino_installed() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
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

    def __init__(self, model, precision: str, threads: int) -> None:
        reason = unsupported_reason(model)
        if reason:
            raise ModelError(f"cannot run the model in OpenVINO: {reason}")
        import openvino as ov
        import torch

        self.model = model
        self.transformer = model[0]
        example = model.preprocess(["an example sentence", "and a second, longer example sentence"])
        accepted = inspect.signature(self.transformer.model.forward).parameters
        self.input_names = [name for name, value in example.items()
                            if isinstance(value, torch.Tensor) and name in accepted]
        if not set(self.input_names) <= TOKEN_INPUTS or "input_ids" not in self.input_names:
            raise ModelError(f"cannot run the model in OpenVINO: inputs {self.input_names}")
        wrapper = _last_hidden_state_module(self.transformer.model).eval()
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings about shape-dependent branches
                converted = ov.convert_model(
                    wrapper, example_input={n: example[n] for n in self.input_names})
            self.compiled = ov.Core().compile_model(converted, "CPU", {
                "INFERENCE_PRECISION_HINT": _HINTS[precision],
                "PERFORMANCE_HINT": "LATENCY",  # one request at a time, on every core
                "INFERENCE_NUM_THREADS": threads,
            })
        except Exception as exc:
            raise ModelError(f"cannot compile the model for OpenVINO: {type(exc).__name__}: {exc}") from exc

    def encode(self, texts: list[str]) -> np.ndarray:
        """Sentence embeddings of ``texts`` (one batch), as the model's own modules make them."""
        import torch

        features = self.model.preprocess(texts)
        hidden = self.compiled({n: features[n].numpy() for n in self.input_names})[0]
        features[self.transformer.module_output_name] = torch.from_numpy(np.asarray(hidden, dtype=np.float32))
        with torch.inference_mode():
            for module in list(self.model)[1:]:
                features = module(features)
        return features["sentence_embedding"].float().numpy()


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
