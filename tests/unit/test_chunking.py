"""Chunking with the model's own tokenizer: limits, boundaries, pages, offsets, overlap."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.core.chunking import Chunker
from tasks.core.errors import ConfigError
from tasks.core.models import Document, DocumentKind, Page

MAX_TOKENS = 254  # all-MiniLM-L6-v2: 256 positions minus [CLS] and [SEP]

SENTENCES = [
    "Glaciers carve deep basins into the valley floor as they advance.",
    "Meltwater fills the hollow once the ice retreats.",
    "Rock flour gives the water its milky turquoise colour.",
    "Trout were stocked in many high lakes during the last century.",
    "Never cross lake ice in spring, when it has lost its strength.",
]


def text_document(text: str) -> Document:
    return Document(kind=DocumentKind.TEXT, pages=(Page(None, text),), content_sha256="x")


def pdf_document(*pages: str) -> Document:
    return Document(kind=DocumentKind.PDF, pages=tuple(Page(i, t) for i, t in enumerate(pages, 1)),
                    content_sha256="x")


@pytest.fixture()
def chunker(tokenizer):
    return Chunker(tokenizer, chunk_tokens=64, overlap=12, max_tokens=MAX_TOKENS)


def prose(paragraphs: int, sentences: int = 4) -> str:
    out = []
    for p in range(paragraphs):
        out.append(" ".join(SENTENCES[(p + s) % len(SENTENCES)] for s in range(sentences)))
    return "\n\n".join(out)


def test_short_text_is_one_chunk(chunker):
    chunks = chunker.chunk_document(text_document("A single short sentence."))
    assert len(chunks) == 1
    assert chunks[0].text == "A single short sentence."
    assert chunks[0].page_start is None and chunks[0].token_count == chunker.count_tokens(chunks[0].text)


def test_chunks_respect_size_and_cover_the_text(chunker):
    text = prose(12)
    chunks = chunker.chunk_document(text_document(text))
    assert len(chunks) > 3
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.token_count <= 64
        assert text[chunk.char_start:chunk.char_end] == chunk.text
        assert chunk.token_count == chunker.count_tokens(chunk.text)
    # Every character that is not white space belongs to some chunk.
    covered = set()
    for chunk in chunks:
        covered.update(range(chunk.char_start, chunk.char_end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


def test_cuts_prefer_sentence_and_paragraph_ends(chunker):
    chunks = chunker.chunk_document(text_document(prose(12)))
    for chunk in chunks[:-1]:
        assert chunk.text.rstrip()[-1] in ".!?", chunk.text[-40:]


def test_neighbours_overlap(chunker):
    chunks = chunker.chunk_document(text_document(prose(12)))
    for first, second in zip(chunks, chunks[1:]):
        assert second.char_start < first.char_end  # shared text
        assert second.char_start > first.char_start


def test_no_overlap_when_zero(tokenizer):
    chunker = Chunker(tokenizer, chunk_tokens=64, overlap=0, max_tokens=MAX_TOKENS)
    chunks = chunker.chunk_document(text_document(prose(12)))
    for first, second in zip(chunks, chunks[1:]):
        assert second.char_start >= first.char_end


def test_page_ranges(chunker):
    pages = [prose(1, 3), prose(1, 5), "", prose(1, 2)]
    document = pdf_document(*pages)
    chunks = chunker.chunk_document(document)
    assert chunks[0].page_start == 1
    assert chunks[-1].page_end == 4
    for chunk in chunks:
        assert chunk.page_start <= chunk.page_end
        # The chunk's first words really are on its first page.
        head = chunk.text.split("\n")[0][:30]
        assert head in pages[chunk.page_start - 1]
    assert all(c.page_start != 3 for c in chunks)  # the empty page holds no chunk start


def test_unbreakable_text_is_cut_within_the_model_limit(tokenizer):
    chunker = Chunker(tokenizer, chunk_tokens=MAX_TOKENS, overlap=0, max_tokens=MAX_TOKENS)
    blob = "x7Qz" * 3000 + " " + "ΩmegaΨ" * 500  # no spaces: subword pieces only
    chunks = chunker.chunk_document(text_document(blob))
    assert chunks
    for chunk in chunks:
        assert chunker.count_tokens(chunk.text) <= MAX_TOKENS
        assert list(chunk.token_ids) == tokenizer.encode(chunk.text, add_special_tokens=False).ids


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(min_size=1, max_size=4000), st.integers(16, MAX_TOKENS), st.integers(0, 8))
def test_no_chunk_ever_exceeds_the_model_limit(tokenizer, text, size, overlap):
    chunker = Chunker(tokenizer, chunk_tokens=size, overlap=overlap, max_tokens=MAX_TOKENS)
    for chunk in chunker.chunk_document(text_document(text)):
        ids = tokenizer.encode(chunk.text, add_special_tokens=True).ids
        assert len(ids) <= MAX_TOKENS + 2
        assert text[chunk.char_start:chunk.char_end] == chunk.text
        # The ids the model reads (instead of the text): the text's own, all counted.
        assert list(chunk.token_ids) == tokenizer.encode(chunk.text, add_special_tokens=False).ids
        assert len(chunk.token_ids) == chunk.token_count


def test_config_is_checked_against_the_model(tokenizer):
    with pytest.raises(ConfigError, match="exceeds the model's limit"):
        Chunker(tokenizer, chunk_tokens=512, overlap=0, max_tokens=MAX_TOKENS)
    with pytest.raises(ConfigError, match="half"):
        Chunker(tokenizer, chunk_tokens=64, overlap=40, max_tokens=MAX_TOKENS)


def test_page_breaks_cut_chunks_and_overlap_stays_on_its_page(tokenizer):
    chunker = Chunker(tokenizer, chunk_tokens=192, overlap=32, max_tokens=MAX_TOKENS)
    pages = [prose(1, 5), prose(1, 5), prose(2, 4)]  # ~70-110 tokens each
    chunks = chunker.chunk_document(pdf_document(*pages))
    assert [(c.page_start, c.page_end) for c in chunks] == [(1, 1), (2, 2), (3, 3)]


def test_long_pages_still_overlap_within_a_page(tokenizer):
    chunker = Chunker(tokenizer, chunk_tokens=64, overlap=16, max_tokens=MAX_TOKENS)
    chunks = chunker.chunk_document(pdf_document(prose(6), prose(6)))
    for first, second in zip(chunks, chunks[1:]):
        if first.page_end == second.page_start:
            assert second.char_start < first.char_end
        else:  # a new page starts a fresh chunk: nothing from the previous page
            assert second.char_start >= first.char_end
    assert {c.page_start for c in chunks} == {1, 2}
    assert all(c.page_start == c.page_end for c in chunks)


def test_tokenizing_a_long_document_lets_other_threads_run(chunker):
    """The model's thread needs the GIL between torch operators: the tokenizer must not hold it
    while it works (its single-text ``encode`` does, for the whole call)."""
    import threading
    import time

    text = prose(2500)  # ~600 kB: hundreds of milliseconds of tokenizing
    ticks: list[float] = []
    running, stop = threading.Event(), threading.Event()

    def ticker() -> None:
        running.set()
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    thread = threading.Thread(target=ticker)
    thread.start()
    assert running.wait(timeout=300)
    began = time.perf_counter()
    (count,) = chunker.count_all([text])
    ended = time.perf_counter()
    stop.set()
    thread.join()
    assert count > 100_000
    # Holding the GIL, the call lets the ticker in only as it starts and ends (twice, measured
    # with the single-text ``encode``); released, the ticker runs throughout, every millisecond
    # or as often as a busy machine lets it.
    assert len([t for t in ticks if began < t < ended]) >= 5


def test_token_ids_become_the_models_inputs():
    from tasks.core.token_inputs import TokenInputs

    inputs = TokenInputs(prefix=(101,), suffix=(102,), pad_id=0,
                         names=("input_ids", "token_type_ids", "attention_mask"), extras={"modality": "text"})
    features = inputs.features([np.array([7, 8, 9], dtype=np.int32), np.array([5], dtype=np.int32)])
    assert features["input_ids"].tolist() == [[101, 7, 8, 9, 102], [101, 5, 102, 0, 0]]
    assert features["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert features["token_type_ids"].tolist() == [[0] * 5] * 2
    assert features["modality"] == "text" and str(features["input_ids"].dtype) == "torch.int64"
