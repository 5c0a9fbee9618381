"""BM25 sparse vectors: the keyword half of hybrid search.

Each chunk gets two BM25 vectors beside its dense one, made in-process by Qdrant Edge's own
BM25 embedder (``qdrant_edge.Bm25``; Rust, no model file) for either store backend:

* ``bm25`` — its words (``words``);
* ``grams`` — the character 4-grams of its words (``grams``): a German compound such as
  *Anführungszeichen* or an inflected *spanischen* shares most of its 4-grams with
  *Zeichen* or *Spanisch*, which whole words never match (see ``char_grams``).

The store applies the IDF to both (``Modifier.IDF``), so a term's weight follows the
collection as it grows. Queries go through the same text processing as documents.

The text processing is a property of a collection's vectors: changing it means a new vector
name, which collections built before get filled in from their payload text
(``VectorStore.ensure_collection``), without touching the dense vectors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

#: The sparse vectors' names in a collection (the dense vector is the unnamed one). Versioned
#: with the text processing below: words, and their character 4-grams.
SPARSE_VECTOR = "bm25"
GRAMS_VECTOR = "grams"
SPARSE_VECTORS = (SPARSE_VECTOR, GRAMS_VECTOR)

#: n-grams of this many characters, of every word padded with ``<`` and ``>`` (a word's start
#: and end are n-grams of their own, a short word one whole). Measured on make eval (README,
#: *Search*): 4 alone beat 3 + 4 and 3 + 4 + 5 (which also store two to three times the terms),
#: and n-grams of long words only (at least 4 to 10 letters) lost to those of every word.
GRAM_SIZES = (4,)
_WORD = re.compile(r"[^\W_]+")

SearchMode = Literal["dense", "sparse", "hybrid"]
SEARCH_MODES: tuple[SearchMode, ...] = ("hybrid", "dense", "sparse")

#: Stopword lists merged for the language-neutral profile: the languages of the Latin and
#: Cyrillic scripts Snowball and Qdrant both know. A word is dropped only for being a function
#: word in one of them; IDF down-weights whatever common words remain.
_STOPWORD_LANGUAGES = ("English", "German", "French", "Spanish", "Italian", "Portuguese", "Dutch",
                       "Swedish", "Danish", "Norwegian", "Finnish", "Russian")

#: Text processing variants measured by ``make eval`` (``bench.eval --bm25-profiles``);
#: ``PROFILE`` is the one collections are built with.
PROFILES = ("neutral", "english", "neutral-nostop", "multilingual", "stemmed")
#: The stemmers of the ``stemmed`` profile: the languages of the project's benchmark.
_STEM_LANGUAGES = ("English", "German", "French")
PROFILE = "neutral"


@dataclass(frozen=True)
class Sparse:
    """A sparse vector: term hashes and weights (BM25 term frequencies for a document, 1.0 per
    term for a query)."""

    indices: tuple[int, ...]
    values: tuple[float, ...]

    def __bool__(self) -> bool:
        return bool(self.indices)


@dataclass(frozen=True)
class Keywords:
    """A chunk's (or a query's) keyword vectors: its words and its words' character 4-grams."""

    words: Sparse
    grams: Sparse

    def __bool__(self) -> bool:
        return bool(self.words) or bool(self.grams)

    def named(self) -> dict[str, Sparse]:
        """The vectors by their names in a collection (empty ones too: a point of a
        collection has every vector, which keeps the store's counts exact)."""
        return {SPARSE_VECTOR: self.words, GRAMS_VECTOR: self.grams}

    @classmethod
    def from_named(cls, vectors: Mapping[str, Sparse]) -> Keywords:
        """From a point's stored sparse vectors (one not stored is empty)."""
        empty = Sparse((), ())
        return cls(words=vectors.get(SPARSE_VECTOR, empty), grams=vectors.get(GRAMS_VECTOR, empty))


def char_grams(text: str) -> str:
    """The character n-grams of ``text``'s words, space-separated (what the ``grams`` vector's
    whitespace tokenizer indexes): ``Zitate`` gives ``<zit zita itat tate ate>``, ``of`` gives
    ``<of>``. Words are runs of letters and digits, case-folded (``ß`` → ``ss``)."""
    grams = []
    for word in _WORD.findall(text.casefold()):
        padded = f"<{word}>"
        if len(padded) <= min(GRAM_SIZES):
            grams.append(padded)
            continue
        for size in GRAM_SIZES:
            grams.extend(padded[i:i + size] for i in range(len(padded) - size + 1))
    return " ".join(grams)


def bm25_configs(profile: str = PROFILE) -> list:
    """Qdrant Edge's ``Bm25Config`` objects for a text-processing profile (one, or one per stemmer).

    * ``neutral`` — words split at anything not a letter or digit (``Word``: numbers, codes
      such as ``VX-3318`` and years are kept), lower case, no stemming, stopwords of the
      languages above: the same tokens whatever a chunk's language, so a German question
      meets German text and an English one English text, without guessing either side's
      language;
    * ``english`` — Qdrant's default: English stopwords and the English Snowball stemmer;
    * ``neutral-nostop`` — ``neutral`` without stopwords (IDF alone weighs common words);
    * ``multilingual`` — ``neutral`` with Unicode segmentation (``Multilingual``: splits
      Chinese and Japanese into words, but drops numbers);
    * ``stemmed`` — ``neutral`` once per stemmer of ``_STEM_LANGUAGES``, see ``Bm25Encoder``.
    """
    return [_config(profile, stem) for stem in (_STEM_LANGUAGES if profile == "stemmed" else (None,))]


def _config(profile: str, stem: str | None):
    from qdrant_edge import (
        Bm25Config,
        DisabledStemmer,
        Language,
        SnowballLanguage,
        SnowballParams,
        StopwordsSet,
        TokenizerType,
    )

    if profile == "english":
        return Bm25Config(language="english")
    if profile not in PROFILES:
        raise ValueError(f"unknown BM25 profile {profile!r}; choose one of {', '.join(PROFILES)}")
    stopwords = StopwordsSet(
        languages=set() if profile == "neutral-nostop"
        else {getattr(Language, name) for name in _STOPWORD_LANGUAGES}, custom=set())
    tokenizer = TokenizerType.Multilingual if profile == "multilingual" else TokenizerType.Word
    stemmer = DisabledStemmer() if stem is None else SnowballParams(getattr(SnowballLanguage, stem))
    return Bm25Config(tokenizer=tokenizer, lowercase=True, stemmer=stemmer, stopwords=stopwords)


def grams_config():
    """Qdrant Edge's ``Bm25Config`` for the ``grams`` vector: ``char_grams``' output split at
    spaces as it is (no case change, stopwords or stemming); ``avg_len`` near the n-grams of an
    average chunk (~190 tokens), for BM25's length normalisation."""
    from qdrant_edge import Bm25Config, DisabledStemmer, StopwordsSet, TokenizerType

    return Bm25Config(tokenizer=TokenizerType.Whitespace, lowercase=False, avg_len=300.0,
                      stopwords=StopwordsSet(languages=set(), custom=set()), stemmer=DisabledStemmer())


class Bm25Encoder:
    """Documents and queries to their keyword vectors: words with one text-processing profile,
    and long words' character n-grams."""

    def __init__(self, profile: str = PROFILE) -> None:
        from qdrant_edge import Bm25

        self.profile = profile
        self._models = [Bm25(config) for config in bm25_configs(profile)]
        self._grams = Bm25(grams_config())

    def documents(self, texts: Sequence[str]) -> list[Keywords]:
        """Each text's vectors (term frequencies, length-normalised)."""
        return [Keywords(words=_merge([m.embed_document(text) for m in self._models]),
                         grams=_merge([self._grams.embed_document(char_grams(text))]))
                for text in texts]

    def query(self, text: str) -> Keywords:
        """A query's vectors: weight 1.0 per distinct term (the store multiplies in the IDF)."""
        return Keywords(words=_merge([m.embed_query(text) for m in self._models]),
                        grams=_merge([self._grams.embed_query(char_grams(text))]))


SparseEncode = Callable[[Sequence[str]], list[Keywords]]


def _merge(vectors) -> Sparse:
    """One vector from several stemmers' (a term they agree on counts once, at its highest
    weight): a word is matched by whichever stem its language gives it."""
    if len(vectors) == 1:
        return Sparse(indices=tuple(vectors[0].indices), values=tuple(vectors[0].values))
    merged: dict[int, float] = {}
    for vector in vectors:
        for index, value in zip(vector.indices, vector.values):
            if value > merged.get(index, 0.0):
                merged[index] = value
    ordered = sorted(merged.items())
    return Sparse(indices=tuple(i for i, _ in ordered), values=tuple(v for _, v in ordered))
