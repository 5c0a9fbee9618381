"""Token-aware chunking with the embedding model's own tokenizer.

Chunks are cut from one tokenization of the whole document: each window of at most
``chunk_tokens`` tokens ends at the strongest boundary it contains (paragraph > sentence >
line > word), neighbours share about ``overlap`` tokens, and every chunk is re-counted so that
none exceeds what the model reads without truncation.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer

from tasks.core.errors import ConfigError
from tasks.core.models import Chunk, Document

PAGE_SEPARATOR = "\n\n"
_SENTENCE_END = frozenset(".!?…。！？")
_CLOSERS = frozenset("\"')]»”’")

# Boundary strengths, strongest first.
PAGE, PARAGRAPH, SENTENCE, LINE, WORD, PUNCT, INSIDE_WORD = 6, 5, 4, 3, 2, 1, 0


def boundary_strength(text: str, prev_end: int, next_start: int) -> int:
    """How good a cut is between a token ending at ``prev_end`` and one starting at ``next_start``."""
    gap = text[prev_end:next_start]
    if not gap:
        prev_char, next_char = text[prev_end - 1], text[next_start]
        return PUNCT if not (prev_char.isalnum() and next_char.isalnum()) else INSIDE_WORD
    if gap.count("\n") >= 2:
        return PARAGRAPH
    end = prev_end - 1
    while end > 0 and text[end] in _CLOSERS:
        end -= 1
    if text[end] in _SENTENCE_END:
        return SENTENCE
    return LINE if "\n" in gap else WORD


class Chunker:
    """Split documents into chunks that fit the model's input length.

    ``max_tokens`` is the model's sequence limit minus its special tokens; a chunk size above
    it is refused at construction, since the model would silently truncate such chunks.
    """

    def __init__(self, tokenizer: Tokenizer, *, chunk_tokens: int, overlap: int,
                 max_tokens: int) -> None:
        if chunk_tokens > max_tokens:
            raise ConfigError(f"chunk_tokens={chunk_tokens} exceeds the model's limit of "
                              f"{max_tokens} tokens per input; lower INGEST_CHUNK_TOKENS")
        if not 0 <= overlap * 2 <= chunk_tokens:
            raise ConfigError(f"chunk_overlap={overlap} must be between 0 and half of "
                              f"chunk_tokens={chunk_tokens}")
        self.tokenizer = tokenizer
        self.chunk_tokens = chunk_tokens
        self.overlap = overlap
        self.max_tokens = max_tokens

    def count_tokens(self, text: str) -> int:
        """Tokens the model reads for ``text``, without special tokens."""
        return self.count_all([text])[0]

    def count_all(self, texts: list[str]) -> list[int]:
        """``count_tokens`` of each text, in one call of the tokenizer."""
        return [len(e.ids) for e in self._encode(texts)]

    def _encode(self, texts: list[str]):
        # ``encode_batch``, even for one text: the tokenizer's single ``encode`` holds the GIL
        # for the whole call (a long document: hundreds of milliseconds), stalling the model
        # thread, whose torch forward pass needs the GIL between operators; the batch call
        # releases it while it works.
        return self.tokenizer.encode_batch(texts, add_special_tokens=False)

    def chunk_document(self, document: Document) -> list[Chunk]:
        """Chunks of a document in reading order, with page range and character offsets."""
        text = PAGE_SEPARATOR.join(page.text for page in document.pages)
        page_starts: list[int] = []
        position = 0
        for page in document.pages:
            page_starts.append(position)
            position += len(page.text) + len(PAGE_SEPARATOR)
        numbers = [page.number for page in document.pages]
        offsets = self._encode([text])[0].offsets
        token_starts = [start for start, _ in offsets]
        # Token index where each page after the first begins (sorted).
        page_breaks = sorted({bisect.bisect_left(token_starts, at) for at in page_starts[1:]})
        windows = list(self._windows(text, offsets, page_breaks))
        pieces = [text[offsets[start][0]:offsets[end - 1][1]] for start, end in windows]
        chunks: list[Chunk] = []
        for (start, end), piece, encoding in zip(windows, pieces, self._encode(pieces)):
            char_start, char_end = offsets[start][0], offsets[end - 1][1]
            ids = encoding.ids
            # Re-tokenising a slice can differ from the slice of a tokenisation (mid-word cuts);
            # shrink until the model reads all of it.
            while len(ids) > self.max_tokens and end - start > 1:
                end = max(start + 1, end - (len(ids) - self.max_tokens))
                char_end = offsets[end - 1][1]
                piece = text[char_start:char_end]
                ids = self._encode([piece])[0].ids
            first = bisect.bisect_right(page_starts, char_start) - 1
            last = bisect.bisect_right(page_starts, max(char_end - 1, 0)) - 1
            chunks.append(Chunk(
                text=piece,
                chunk_index=len(chunks),
                char_start=char_start,
                char_end=char_end,
                page_start=numbers[first],
                page_end=numbers[last],
                token_count=len(ids),
                ocr=any(page.ocr for page in document.pages[first:last + 1]),
                # int32: a quarter of the list's memory while the group waits for the model.
                token_ids=np.asarray(ids, dtype=np.int32),
            ))
        return chunks

    def _windows(self, text: str, offsets: Sequence[tuple[int, int]], page_breaks: list[int]):
        """Yield ``(start, end)`` token ranges covering all tokens, cut at strong boundaries.

        A page break ends a chunk once it holds a quarter of ``chunk_tokens`` (so hits cite one
        page where they can), other boundaries once it holds half; overlap never reaches back
        across a page break.
        """
        total = len(offsets)
        size, overlap = self.chunk_tokens, self.overlap
        break_set = set(page_breaks)

        def strength(j: int) -> int:
            if j in break_set:
                return PAGE
            return boundary_strength(text, offsets[j - 1][1], offsets[j][0])

        start = 0
        while start < total:
            end = min(start + size, total)
            # The first page break past a quarter of the window, if the window reaches one.
            at = bisect.bisect_left(page_breaks, start + max(1, size // 4))
            if at < len(page_breaks) and page_breaks[at] < end:
                end = page_breaks[at]
            elif end < total:
                # Latest position of the strongest boundary in the back half of the window.
                lowest = start + max(1, size // 2)
                end = max(range(lowest, end + 1), key=lambda j: (strength(j), j))
            yield start, end
            if end >= total:
                return
            # Start the overlap at a sentence start within it if there is one, else as early as
            # a word starts; never mid-word, never on an earlier page, and always advancing.
            before = bisect.bisect_right(page_breaks, end)
            floor = max(end - overlap, start + 1, page_breaks[before - 1] if before else 0)
            window = range(floor, end)
            start = max(window, key=lambda j: (min(strength(j), SENTENCE), -j)) if window else end
