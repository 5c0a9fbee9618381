"""OCR of pages without a text layer, with the real engine (RapidOCR) on PDFs the tests scan:
only the pages that need it are read, page numbers are kept, the accuracy holds on noisy and
skewed scans, and the limits (page cap, per-page CPU budget, the worker's memory) apply."""

from __future__ import annotations

import pytest

from tasks.core.errors import FileRejected
from tasks.core.models import Reason
from tasks.core.ocr import OcrConfig, engine_version
from tasks.core.readers import read_pdf
from tests.conftest import SCAN_PAGES, cer, scanned_pdf

pytestmark = [pytest.mark.integration, pytest.mark.once]

AUTO = OcrConfig(mode="auto", engine=engine_version())


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    return {
        "log": scanned_pdf(folder / "log.pdf").read_bytes(),
        "all-scanned": scanned_pdf(folder / "all.pdf", [(t, True) for t, _ in SCAN_PAGES[1:]]).read_bytes(),
        "rough": scanned_pdf(folder / "rough.pdf", SCAN_PAGES[1:2], dpi=150, skew=1.5, noise=25,
                             speckle=0.002).read_bytes(),
    }


def test_auto_reads_only_the_pages_without_a_text_layer(scans):
    document = read_pdf(scans["log"], max_pages=100, ocr=AUTO)
    assert [(p.number, p.ocr) for p in document.pages] == [(1, False), (2, True), (3, True)]
    assert document.pages[0].text.startswith("Plant maintenance log")
    assert cer(SCAN_PAGES[1][0], document.pages[1].text) < 0.03
    assert cer(SCAN_PAGES[2][0], document.pages[2].text) < 0.05, "accents of a French page"
    assert "VX-3318" in document.pages[1].text and "1,200" in document.pages[1].text
    assert document.textless_pages == 2 and document.notes() == ("OCR on 2 of 3 pages",)


def test_a_rough_scan_is_still_read(scans):
    # 150 dpi, 1.5 degrees of skew, grey noise and speckles
    [page] = read_pdf(scans["rough"], max_pages=100, ocr=AUTO).pages
    assert page.ocr and cer(SCAN_PAGES[1][0], page.text) < 0.05


def test_force_reads_every_page_and_off_reads_none(scans):
    forced = read_pdf(scans["log"], max_pages=100, ocr=OcrConfig(mode="force", engine="e"))
    assert [p.ocr for p in forced.pages] == [True, True, True]
    assert cer(SCAN_PAGES[0][0], forced.pages[0].text) < 0.03
    off = read_pdf(scans["log"], max_pages=100, ocr=OcrConfig(mode="off"))
    assert [p.ocr for p in off.pages] == [False, False, False]
    assert [bool(p.text.strip()) for p in off.pages] == [True, False, False]
    assert off.textless_pages == 2 and off.notes() == ()


def test_without_ocr_a_scan_has_no_text_and_the_outcome_says_what_would_help(scans, monkeypatch):
    with pytest.raises(FileRejected) as rejected:
        read_pdf(scans["all-scanned"], max_pages=100, ocr=OcrConfig(mode="off"))
    assert rejected.value.reason is Reason.NO_TEXT and "INGEST_OCR=off" in rejected.value.detail
    # Without the extra installed: today's outcome, with a hint naming the extra.
    monkeypatch.setattr("tasks.core.readers.ocr_available", lambda: False)
    with pytest.raises(FileRejected) as rejected:
        read_pdf(scans["all-scanned"], max_pages=100, ocr=OcrConfig(mode="off"))
    assert rejected.value.reason is Reason.NO_TEXT
    assert "pip install 'knowledge-ingest[ocr]'" in rejected.value.detail


def test_a_page_without_any_text_even_by_ocr_leaves_the_file_no_text():
    from tests.conftest import MIXED

    with pytest.raises(FileRejected) as rejected:  # grey rectangles, no letters
        read_pdf((MIXED / "scanned.pdf").read_bytes(), max_pages=100, ocr=AUTO)
    assert rejected.value.reason is Reason.NO_TEXT
    assert "OCR found no text" in rejected.value.detail


def test_the_page_cap_leaves_later_pages_alone_and_says_so(scans):
    document = read_pdf(scans["all-scanned"], max_pages=100,
                        ocr=OcrConfig(mode="auto", max_pages=1, engine="e"))
    assert [(p.number, p.ocr) for p in document.pages] == [(1, True), (2, False)]
    assert document.notes()[0] == "OCR on 1 of 2 pages"
    assert "OCR skipped 1 page(s)" in document.notes()[1] and "from page 2" in document.notes()[1]


def test_in_the_parse_workers_each_page_has_its_own_cpu_budget(scans):
    from tasks.core.isolation import ParsePool

    # 100 dpi: on a busy machine every CPU second of OCR is several seconds of wall time.
    pool = ParsePool(workers=1, timeout_s=60.0, memory_mb=1024)
    try:
        document = pool.read_pdf(scans["rough"], max_pages=100,
                                 ocr=OcrConfig(mode="auto", dpi=100, engine="e"))
        assert [p.ocr for p in document.pages] == [True]
        assert "VX-3318" in document.pages[0].text
        # A budget no page can meet: the page is listed as failed (the file has no text left,
        # so it is no_text, saying why), and the parse's own budget was not used up by OCR.
        tight = OcrConfig(mode="auto", dpi=100, page_timeout_s=0.05, engine="e")
        with pytest.raises(FileRejected) as rejected:
            pool.read_pdf(scans["rough"], max_pages=100, ocr=tight)
        assert rejected.value.reason is Reason.NO_TEXT
        assert "INGEST_OCR_PAGE_TIMEOUT" in rejected.value.detail
    finally:
        pool.close()


def test_the_worker_memory_limit_applies_to_ocr(scans):
    from tasks.core.isolation import ParsePool

    # The engine's allowance is added to the worker's limit; far too little in all costs the
    # file only: too_large (a MemoryError, onnxruntime's bad_alloc) or parser_crashed (OpenBLAS
    # exits the process when it cannot allocate), and the next file parses in a new worker.
    pool = ParsePool(workers=1, timeout_s=60.0, memory_mb=128)
    try:
        with pytest.raises(FileRejected) as rejected:
            pool.read_pdf(scans["all-scanned"], max_pages=100,
                          ocr=OcrConfig(mode="auto", dpi=600, engine="e"))
        assert rejected.value.reason in (Reason.TOO_LARGE, Reason.PARSER_CRASHED)
        document = pool.read_pdf(scans["log"], max_pages=100, ocr=OcrConfig(mode="off"))
        assert document.pages[0].text.startswith("Plant maintenance log")
    finally:
        pool.close()


def test_a_real_scanned_book_page_is_read():
    # A page of the 1885 first edition of Huckleberry Finn (bench/ocr_real: public domain):
    # yellowed paper, bleed-through, an illustration beside the text.
    from bench.ocr import REAL

    document = read_pdf((REAL / "en-huckleberry-finn-1885-p22.pdf").read_bytes(), max_pages=10, ocr=AUTO)
    [page] = document.pages
    reference = (REAL / "en-huckleberry-finn-1885-p22.txt").read_text(encoding="utf-8")
    # Most of what differs is where the illustration's caption lands in the reading order.
    assert page.ocr and cer(reference, page.text) < 0.06
    # Words split at line ends are joined, as in a text layer's text.
    assert "right between my shoulders" in page.text and "it was minutes and minutes" in page.text
