"""BM25 text processing (Qdrant Edge's embedder, in-process): the tokens both sides of a
hybrid search agree on."""

from __future__ import annotations

import pytest

from tasks.core.sparse import PROFILE, PROFILES, Bm25Encoder




def terms(encoder: Bm25Encoder, text: str) -> set[int]:
    return set(encoder.query(text).indices)


def test_the_default_profile_keeps_codes_and_numbers_and_drops_function_words():
    encoder = Bm25Encoder()
    assert encoder.profile == PROFILE == "neutral"
    assert terms(encoder, "VX-3318") == terms(encoder, "vx 3318") and len(terms(encoder, "VX-3318")) == 2
    assert terms(encoder, "1897") and terms(encoder, "3318") <= terms(encoder, "VX-3318")
    for stopwords in ("the of and", "der die das und", "le la les et"):
        assert not encoder.query(stopwords)
    # no stemming, and the same tokens in any language: a word matches its own form
    assert terms(encoder, "Straße") == terms(encoder, "straße") != terms(encoder, "Strasse")
    assert terms(encoder, "running") != terms(encoder, "run")


def test_documents_weigh_repeated_terms_and_queries_do_not():
    encoder = Bm25Encoder()
    [document] = encoder.documents(["seal seal seal gasket"])
    weights = dict(zip(document.indices, document.values))
    [seal], [gasket] = terms(encoder, "seal"), terms(encoder, "gasket")
    assert weights[seal] > weights[gasket] > 0
    assert set(encoder.query("seal seal gasket").values) == {1.0}


@pytest.mark.parametrize("profile", PROFILES)
def test_every_measured_profile_builds(profile):
    encoder = Bm25Encoder(profile)
    assert encoder.query("Die Anführungszeichen wurden hinzugefügt")


def test_an_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="unknown BM25 profile"):
        Bm25Encoder("klingon")
