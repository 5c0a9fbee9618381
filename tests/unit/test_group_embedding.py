"""The embed stage: a group's chunks go to the model in one call; vectors come back to the
right files, and a file that breaks the model costs only itself. (A stand-in embedder: pure
logic only.)"""

from __future__ import annotations

import numpy as np

from tasks.core.chunking import Chunker
from tasks.core.models import FileOutcome, Reason, Status
from tasks.core.readers import read_text
from tasks.core.sources import discover_files
from tasks.core.stages.chunk import chunk
from tasks.core.stages.embed import embed
from tasks.core.stages.group import Group, Settled
from tasks.core.stages.read import ReadFile


class RecordingEmbedder:
    """A vector per text derived from the text itself; refuses any call holding 'poison'."""

    dimension, precision, backend, label = 4, "fp32", "torch", "fp32"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.ids: list[list] = []

    def embed_timed(self, texts, token_counts, *, batch_size, token_ids=None):
        self.calls.append(list(texts))
        self.ids.append(list(token_ids))
        if any("poison" in t for t in texts):
            raise RuntimeError("the model cannot take this")
        return np.array([[len(t), t.count(" "), hash(t) % 97, 1.0] for t in texts], dtype=np.float32), 0.01


def chunked_group(folder, tokenizer):
    """The folder's files read and chunked (no store, no model)."""
    files = list(discover_files([str(folder)]))
    read = [ReadFile(file=f, document=read_text(open(f.path, "rb").read()), replaces=False, seconds=0.0)
            for f in files if f.size]
    empty = [Settled(FileOutcome.rejected(f.uri, Reason.EMPTY, "no content")) for f in files if not f.size]
    group = Group(sources=tuple(f.uri for f in files)).then("read", 0.0, read, empty)
    return chunk(group, Chunker(tokenizer, chunk_tokens=32, overlap=4, max_tokens=254))


def write(folder, name: str, words: int, word: str = "lake") -> None:
    (folder / name).write_text(" ".join(f"{word}{i % 7}." for i in range(words)))


def test_one_call_for_the_group_and_vectors_reach_their_files(tmp_path, tokenizer):
    write(tmp_path, "a.txt", 40)
    write(tmp_path, "b.txt", 90, "moraine")
    (tmp_path / "empty.txt").write_text("")
    write(tmp_path, "c.txt", 10, "firn")
    embedder = RecordingEmbedder()
    group = embed(chunked_group(tmp_path, tokenizer), embedder, batch_size=16)
    assert len(embedder.calls) == 1
    # The chunker's token ids travel with the texts (the model does not tokenise them again).
    assert [list(ids) for ids in embedder.ids[0]] == [
        tokenizer.encode(t, add_special_tokens=False).ids for t in embedder.calls[0]]
    assert [s.outcome.reason for s in group.settled] == [Reason.EMPTY]
    assert sorted(f.chunked.file.name for f in group.files) == ["a.txt", "b.txt", "c.txt"]
    assert set(group.seconds) == {"read", "chunk", "embed"}
    for item in group.files:
        assert len(item.vectors) == len(item.chunked.chunks) > 0
        for piece, vector in zip(item.chunked.chunks, item.vectors):
            # each vector is the one computed from this chunk's own text
            assert list(vector[:3]) == [len(piece.text), piece.text.count(" "), hash(piece.text) % 97]


def test_a_file_that_breaks_the_model_fails_alone(tmp_path, tokenizer):
    write(tmp_path, "a.txt", 30)
    write(tmp_path, "b.txt", 30, "poison")
    write(tmp_path, "c.txt", 30, "firn")
    embedder = RecordingEmbedder()
    group = embed(chunked_group(tmp_path, tokenizer), embedder, batch_size=16)
    [failed] = group.settled
    assert (failed.outcome.status, failed.outcome.reason) == (Status.FAILED, Reason.ERROR)
    assert failed.outcome.source.endswith("/b.txt") and "cannot take this" in failed.outcome.detail
    assert sorted(f.chunked.file.name for f in group.files) == ["a.txt", "c.txt"]
    assert len(embedder.calls) == 4  # the group, then each file alone
