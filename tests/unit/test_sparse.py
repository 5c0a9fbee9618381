"""BM25 text processing (Qdrant Edge's embedder, in-process): the tokens both sides of a
hybrid search agree on."""

from __future__ import annotations

import pytest

from tasks.core.sparse import (
    GRAMS_VECTOR,
    PROFILE,
    PROFILES,
    SPARSE_VECTOR,
    Bm25Encoder,
    Keywords,
    char_grams,
)


def terms(encoder: Bm25Encoder, text: str) -> set[int]:
    return set(encoder.query(text).words.indices)


def grams(encoder: Bm25Encoder, text: str) -> set[int]:
    return set(encoder.query(text).grams.indices)


def test_the_default_profile_keeps_codes_and_numbers_and_drops_function_words():
    encoder = Bm25Encoder()
    assert encoder.profile == PROFILE == "neutral"
    assert terms(encoder, "VX-3318") == terms(encoder, "vx 3318") and len(terms(encoder, "VX-3318")) == 2
    assert terms(encoder, "1897") and terms(encoder, "3318") <= terms(encoder, "VX-3318")
    for stopwords in ("the of and", "der die das und", "le la les et"):
        assert not encoder.query(stopwords).words
    # no stemming, and the same tokens in any language: a word matches its own form
    assert terms(encoder, "Straße") == terms(encoder, "straße") != terms(encoder, "Strasse")
    assert terms(encoder, "running") != terms(encoder, "run")


def test_documents_weigh_repeated_terms_and_queries_do_not():
    encoder = Bm25Encoder()
    [document] = encoder.documents(["seal seal seal gasket"])
    weights = dict(zip(document.words.indices, document.words.values))
    [seal], [gasket] = terms(encoder, "seal"), terms(encoder, "gasket")
    assert weights[seal] > weights[gasket] > 0
    assert set(encoder.query("seal seal gasket").words.values) == {1.0}
    assert set(encoder.query("seal seal gasket").grams.values) == {1.0}


def test_character_grams_of_every_word_padded_and_case_folded():
    assert char_grams("Zitate") == "<zit zita itat tate ate>"
    assert char_grams("of X") == "<of> <x>"  # a short word is one gram, whole
    assert char_grams("Straße") == char_grams("STRASSE")  # case-folded: ß is ss
    assert char_grams("VX-3318, l'état") == "<vx> <331 3318 318> <l> <éta état tat>"
    assert char_grams("... — !") == ""


def test_grams_match_a_compound_by_its_parts_where_words_do_not():
    # "Textzitate" and "Zitate", "spanischen" and "Spanisch": no word in common, many 4-grams
    encoder = Bm25Encoder()
    for query, document in (("Zitate", "Alle Textzitate"), ("spanischen", "Zitatstile für Spanisch")):
        assert not terms(encoder, query) & terms(encoder, document)
        shared = grams(encoder, query) & grams(encoder, document)
        assert len(shared) >= 3, (query, document)
    [document] = encoder.documents(["Alle Textzitate"])
    assert set(document.named()) == {SPARSE_VECTOR, GRAMS_VECTOR}
    assert Keywords.from_named(document.named()) == document


def test_an_empty_text_has_empty_vectors_of_both_kinds():
    encoder = Bm25Encoder()
    assert not encoder.query("?!") and not encoder.documents([""])[0]


@pytest.mark.parametrize("profile", PROFILES)
def test_every_measured_profile_builds(profile):
    encoder = Bm25Encoder(profile)
    assert encoder.query("Die Anführungszeichen wurden hinzugefügt").words


def test_an_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="unknown BM25 profile"):
        Bm25Encoder("klingon")
