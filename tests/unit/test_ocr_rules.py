"""The OCR rules that need no engine: which pages are read, what a file's points record of OCR
(and so when a file is read again), and what a document with OCR'd pages reports."""

from __future__ import annotations

import pytest

from tasks.core.models import Document, DocumentKind, Page
from tasks.core.ocr import MIN_LAYER_CHARS, OcrConfig, needs_ocr
from tasks.core.payload import FileHead
from tasks.core.stages.read import ocr_key


@pytest.mark.parametrize(("layer", "expected"), [
    ("", True),
    ("  \n\t ", True),
    ("12", True),                              # a page number
    ("Scanned by CamScanner", True),           # a scanning app's stamp: 19 letters
    ("- 3 -\n2024-01-17", True),
    ("The seals are replaced every 1,200 hours of operation.", False),
    ("x" * MIN_LAYER_CHARS, False),
])
def test_a_page_needs_ocr_when_its_layer_has_almost_no_letters_or_digits(layer, expected):
    assert needs_ocr(layer) is expected


def test_which_pages_each_mode_reads():
    layers = {1: "A page with a real text layer on it, long enough.", 2: "", 3: "7"}
    assert OcrConfig(mode="off").pages_to_read(layers) == []
    assert OcrConfig(mode="auto").pages_to_read(layers) == [2, 3]
    assert OcrConfig(mode="force").pages_to_read(layers) == [1, 2, 3]


def test_the_ocr_key_changes_only_where_ocr_can_change_the_text():
    auto = OcrConfig(mode="auto", dpi=200, engine="rapidocr-3.10.0")
    assert OcrConfig(mode="off").key(3) == ""
    assert auto.key(0) == "", "a PDF whose pages all have text is the same with OCR on or off"
    assert auto.key(2) == "rapidocr-3.10.0:auto:200dpi"
    assert OcrConfig(mode="force", engine="e").key(0) == "e:force:200dpi"
    assert OcrConfig(mode="auto", dpi=300, engine="rapidocr-3.10.0").key(2) != auto.key(2)
    assert OcrConfig(mode="auto", engine="rapidocr-4.0.0").key(2) != auto.key(2)


def _head(page_count, textless, key=""):
    return FileHead(content_sha256="h", config_fingerprint="f", chunk_count=1, page_count=page_count,
                    signature=None, complete=True, ocr_key=key, textless_pages=textless)


def test_a_file_is_current_only_with_the_ocr_key_its_pages_call_for(tmp_path):
    from tests.conftest import make_config

    config = make_config(tmp_path).model_copy(update={"ocr": OcrConfig(mode="auto", engine="e")})
    assert ocr_key(_head(None, None), config) == "", "text files: OCR does not apply"
    assert ocr_key(_head(4, 0), config) == ""
    assert ocr_key(_head(4, 2), config) == "e:auto:200dpi"
    # Indexed before OCR existed (textless pages not counted): kept; --overwrite reads it again.
    assert ocr_key(_head(4, None), config) == ""


def test_a_document_says_how_many_pages_ocr_read_and_which_it_could_not():
    document = Document(kind=DocumentKind.PDF, content_sha256="x",
                        pages=(Page(1, "text"), Page(2, "scan", ocr=True), Page(3, "scan", ocr=True)),
                        unreadable_pages=(4,), textless_pages=3,
                        ocr_failed=((4, "more than 60 s of CPU (INGEST_OCR_PAGE_TIMEOUT)"),),
                        ocr_capped=(5, 6))
    assert document.ocr_pages == 2
    notes = document.notes()
    assert notes[0] == "OCR on 2 of 4 pages"
    assert "OCR failed on page(s) [4] (page 4: more than 60 s of CPU" in notes[1]
    assert "OCR skipped 2 page(s)" in notes[2] and "INGEST_OCR_MAX_PAGES" in notes[2]


def test_chunks_of_ocr_pages_are_marked(tokenizer):
    from tasks.core.chunking import Chunker

    chunker = Chunker(tokenizer, chunk_tokens=32, overlap=0, max_tokens=256)
    text = "A sentence about glaciers and the lakes they leave behind in the valleys. " * 3
    document = Document(kind=DocumentKind.PDF, content_sha256="x",
                        pages=(Page(1, text), Page(2, text, ocr=True)))
    chunks = chunker.chunk_document(document)
    assert {c.ocr for c in chunks if c.page_start == c.page_end == 1} == {False}
    assert {c.ocr for c in chunks if c.page_start == 2} == {True}


def test_without_the_extra_auto_is_off_and_force_is_refused(monkeypatch):
    from pydantic import ValidationError

    from tasks.core.settings import IngestSettings

    monkeypatch.setenv("INGEST_OCR", "auto")
    assert IngestSettings().ocr_config().mode == "auto"  # the test extras include OCR
    monkeypatch.setattr("tasks.core.ocr.available", lambda: False)
    config = IngestSettings().ocr_config()
    assert (config.mode, config.key(3)) == ("off", ""), "exactly as before OCR existed"
    monkeypatch.setenv("INGEST_OCR", "force")
    with pytest.raises(ValidationError, match=r"INGEST_OCR=force needs the OCR engine: install "
                                              r"the OCR extra: pip install 'knowledge-ingest\[ocr\]'"):
        IngestSettings()
