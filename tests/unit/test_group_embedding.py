"""A group's chunks go to the model in one call; vectors come back to the right files, and a
file that breaks the model costs only itself. (A stand-in embedder: pure logic only.)"""

from __future__ import annotations

import numpy as np

from tasks.core.chunking import Chunker
from tasks.core.models import Reason, Status
from tasks.core.process import FileProcessor
from tasks.core.sources import discover_files
from tests.conftest import make_config


class RecordingEmbedder:
    """A vector per text derived from the text itself; refuses any call holding 'poison'."""

    dimension, precision, backend, label = 4, "fp32", "torch", "fp32"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def embed(self, texts, token_counts, *, batch_size):
        self.calls.append(list(texts))
        if any("poison" in t for t in texts):
            raise RuntimeError("the model cannot take this")
        return np.array([[len(t), t.count(" "), hash(t) % 97, 1.0] for t in texts], dtype=np.float32)


def processor(tmp_path, tokenizer, embedder) -> FileProcessor:
    config = make_config(tmp_path / "store")
    chunker = Chunker(tokenizer, chunk_tokens=32, overlap=4, max_tokens=254)
    return FileProcessor(config=config, embedder=embedder, chunker=chunker)


def write(folder, name: str, words: int, word: str = "lake") -> None:
    (folder / name).write_text(" ".join(f"{word}{i % 7}." for i in range(words)))


def test_one_call_for_the_group_and_vectors_reach_their_files(tmp_path, tokenizer):
    docs = tmp_path / "docs"
    docs.mkdir()
    write(docs, "a.txt", 40)
    write(docs, "b.txt", 90, "moraine")
    (docs / "empty.txt").write_text("")
    write(docs, "c.txt", 10, "firn")
    files = list(discover_files([str(docs)]))
    embedder = RecordingEmbedder()
    prepared, failures = processor(tmp_path, tokenizer, embedder).prepare_group(files, {})
    assert failures == [] and list(prepared) == [f.uri for f in files]
    assert len(embedder.calls) == 1
    by_name = {uri.rsplit("/", 1)[-1]: item for uri, item in prepared.items()}
    assert by_name["empty.txt"].outcome.reason is Reason.EMPTY and by_name["empty.txt"].points is None
    for name in ("a.txt", "b.txt", "c.txt"):
        item = by_name[name]
        assert item.outcome.status is Status.INDEXED and item.outcome.chunks == len(item.points) > 0
        for point in item.points:  # each vector is the one computed from this point's own text
            text = point.payload["text"]
            assert point.vector[:3] == [len(text), text.count(" "), hash(text) % 97]


def test_a_file_that_breaks_the_model_fails_alone(tmp_path, tokenizer):
    docs = tmp_path / "docs"
    docs.mkdir()
    write(docs, "a.txt", 30)
    write(docs, "b.txt", 30, "poison")
    write(docs, "c.txt", 30, "firn")
    files = list(discover_files([str(docs)]))
    embedder = RecordingEmbedder()
    prepared, failures = processor(tmp_path, tokenizer, embedder).prepare_group(files, {})
    outcomes = {uri.rsplit("/", 1)[-1]: item.outcome for uri, item in prepared.items()}
    assert (outcomes["b.txt"].status, outcomes["b.txt"].reason) == (Status.FAILED, Reason.ERROR)
    assert "cannot take this" in outcomes["b.txt"].detail
    assert outcomes["a.txt"].status is outcomes["c.txt"].status is Status.INDEXED
    assert len(embedder.calls) == 4  # the group, then each file alone
