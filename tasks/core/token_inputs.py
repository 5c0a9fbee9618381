"""A model's inputs built from token ids the chunker already made, instead of from text.

The chunker tokenises every chunk to count it (``Chunker.chunk_document``); sentence-transformers
would tokenise the same text again before each forward pass, on the model's thread, where every
other stage waits for it. ``TokenInputs`` makes exactly what the model's own ``preprocess``
makes of the text — the special tokens around the ids, right padding with the tokenizer's pad
id, an attention mask, token types 0 — from the ids. It is derived once per model and checked
against ``preprocess`` on probe texts: a model whose inputs it does not reproduce (another
template, left padding, inputs beyond ids, mask and types) keeps tokenising its texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tokenizers import Tokenizer

#: The token tensors a text transformer takes (by their Hugging Face names).
TOKEN_INPUTS = frozenset({"input_ids", "attention_mask", "token_type_ids"})

# Of different lengths (the batch pads), with punctuation, accents and a word the vocabulary
# splits: what the chunks hold.
PROBES = ("Chunked text, with punctuation; and a longer tail of ordinary words.",
          "Zwei Sätze — déjà vu.", "x")


@dataclass(frozen=True)
class TokenInputs:
    """How a batch of token-id sequences becomes the model's input tensors."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    pad_id: int
    #: The tensors the model's ``preprocess`` returns, by name (a subset of ``TOKEN_INPUTS``).
    names: tuple[str, ...]
    #: What else ``preprocess`` returns, passed on as is (sentence-transformers 6: the modality).
    extras: dict = field(default_factory=dict)

    def features(self, batch: Sequence[np.ndarray]) -> dict:
        """The model's input features for ``batch`` (token ids without special tokens)."""
        import torch

        width = len(self.prefix) + len(self.suffix) + max(len(ids) for ids in batch)
        input_ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            end = len(self.prefix) + len(ids)
            input_ids[row, :len(self.prefix)] = self.prefix
            input_ids[row, len(self.prefix):end] = ids
            input_ids[row, end:end + len(self.suffix)] = self.suffix
            mask[row, :end + len(self.suffix)] = 1
        tensors = {"input_ids": input_ids, "attention_mask": mask,
                   "token_type_ids": np.zeros_like(input_ids)}
        return {**{name: torch.from_numpy(tensors[name]) for name in self.names}, **self.extras}


def token_inputs(model, tokenizer: Tokenizer) -> TokenInputs | None:
    """``TokenInputs`` for a sentence-transformers ``model`` whose text ``tokenizer`` (a copy of
    the model's, without truncation or padding) is given; ``None`` if they would not reproduce
    the model's own inputs exactly."""
    import torch

    pad_id = getattr(getattr(model, "tokenizer", None), "pad_token_id", None)
    try:
        expected = model.preprocess(list(PROBES))
    except Exception:  # noqa: BLE001 (a model that cannot say: it tokenises its texts)
        return None
    names = tuple(name for name, value in expected.items() if isinstance(value, torch.Tensor))
    if pad_id is None or "input_ids" not in names or not set(names) <= TOKEN_INPUTS:
        return None
    with_specials = tokenizer.encode(PROBES[0], add_special_tokens=True).ids
    bare = tokenizer.encode(PROBES[0], add_special_tokens=False).ids
    at = next((i for i in range(len(with_specials) - len(bare) + 1)
               if with_specials[i:i + len(bare)] == bare), None)
    if at is None:
        return None
    candidate = TokenInputs(
        prefix=tuple(with_specials[:at]), suffix=tuple(with_specials[at + len(bare):]),
        pad_id=int(pad_id), names=names,
        extras={name: value for name, value in expected.items() if name not in names})
    made = candidate.features([np.asarray(e.ids, dtype=np.int64)
                               for e in tokenizer.encode_batch(list(PROBES), add_special_tokens=False)])
    if any(not torch.equal(made[name], expected[name]) for name in names):
        return None
    return candidate
