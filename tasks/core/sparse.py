"""BM25 sparse vectors: the keyword half of hybrid search.

Each chunk gets a BM25 vector beside its dense one, made in-process by Qdrant Edge's own BM25
embedder (``qdrant_edge.Bm25``; Rust, ~0.1 ms per chunk, no model file) for either store
backend; the store applies the IDF (``Modifier.IDF``), so a term's weight follows the
collection as it grows. Queries go through the same text processing as documents.

The text processing is a property of a collection's vectors: changing it means a new vector
name (``SPARSE_VECTOR``), which collections built before get filled in from their payload text
(``VectorStore.ensure_collection``), without touching the dense vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

#: The sparse vector's name in a collection (the dense vector is the unnamed one). Versioned
#: with the text processing below.
SPARSE_VECTOR = "bm25"

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


class Bm25Encoder:
    """Documents and queries to BM25 sparse vectors with one text-processing profile."""

    def __init__(self, profile: str = PROFILE) -> None:
        from qdrant_edge import Bm25

        self.profile = profile
        self._models = [Bm25(config) for config in bm25_configs(profile)]

    def documents(self, texts: Sequence[str]) -> list[Sparse]:
        """One vector per text (term frequencies, length-normalised)."""
        return [_merge([m.embed_document(text) for m in self._models]) for text in texts]

    def query(self, text: str) -> Sparse:
        """A query's vector: weight 1.0 per distinct term (the store multiplies in the IDF)."""
        return _merge([m.embed_query(text) for m in self._models])


SparseEncode = Callable[[Sequence[str]], list[Sparse]]


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
