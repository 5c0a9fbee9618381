"""A scanned multi-page PDF through the real flow (both embedded backends): indexed with
page-cited chunks, OCR counted in its row and the run's totals, found by a question whose
answer is only on a scanned page; switching OCR re-reads only the files it affects."""

from __future__ import annotations

import pytest

from flows.ingest_flow import ingest_documents
from tasks.core.resources import resources
from tasks.core.search import search
from tasks.core.settings import IngestParams, IngestSettings, PipelineConfig
from tests.conftest import MIXED, SCAN_PAGES, scanned_pdf

pytestmark = pytest.mark.flow


@pytest.fixture(autouse=True)
def _ocr_on(monkeypatch):
    # 100 dpi: a third of the CPU of 200 dpi on these pages, with the same text (bench.ocr); a
    # busy machine stretches every CPU second.
    monkeypatch.setenv("INGEST_OCR", "auto")
    monkeypatch.setenv("INGEST_OCR_DPI", "100")


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    scanned_pdf(folder / "maintenance-log.pdf")
    (folder / "heat-pumps.txt").write_bytes((MIXED / "heat-pumps.txt").read_bytes())
    (folder / "alpine-lakes.pdf").write_bytes((MIXED / "alpine-lakes.pdf").read_bytes())
    return folder


def _statuses(summary) -> dict:
    return {o.source.rsplit("/", 1)[-1]: o.status.value for o in summary.files}


@pytest.mark.once  # the payload is a dict to either backend; OCR is part of reading
def test_a_scanned_pdf_is_indexed_with_page_cited_chunks(ingest_env, folder):
    summary = ingest_documents(sources=[str(folder)], collection="scans")
    [log] = [o for o in summary.files if o.source.endswith("maintenance-log.pdf")]
    assert (log.status.value, log.pages, log.ocr_pages) == ("indexed", 3, 2)
    assert log.detail == "OCR on 2 of 3 pages"
    assert summary.totals.ocr_pages == 2 and summary.totals.failed == 0

    config = PipelineConfig.build(IngestSettings(), IngestParams(sources=["."], collection="scans"))
    store = resources().store(config.store)
    points = [p.payload for p in store.iter_points("scans") if p.payload["file_name"] == "maintenance-log.pdf"]
    assert {(p["page_start"], p["ocr"]) for p in points} == {(1, False), (2, True), (3, True)}
    assert {p["ocr_key"] for p in points} == {config.ocr.key(2)} and config.ocr.key(2)

    # The answer is only in the image of page 2: found, and cited by file and page.
    [hit] = search("How often are the seals of pump VX-3318 replaced?", config, resources(), limit=1)
    assert (hit.file_name, hit.pages) == ("maintenance-log.pdf", "p. 2")
    assert "1,200 operating hours" in hit.text
    [hit] = search("nettoyage des plaques de l'échangeur", config, resources(), limit=1)
    assert (hit.file_name, hit.pages) == ("maintenance-log.pdf", "p. 3")


@pytest.mark.once  # the re-read decision is the read stage's, whatever the store
def test_switching_ocr_re_reads_only_the_files_it_affects(ingest_env, folder, monkeypatch):
    # One scanned page is enough here (each of three runs reads it by OCR).
    scanned_pdf(folder / "maintenance-log.pdf", SCAN_PAGES[:2])
    first = ingest_documents(sources=[str(folder)], collection="scans")
    assert set(_statuses(first).values()) == {"indexed"}

    monkeypatch.setenv("INGEST_OCR", "off")
    off = ingest_documents(sources=[str(folder)], collection="scans")
    # Only the PDF with pages lacking a text layer changes: its scanned pages lose their text.
    assert _statuses(off) == {"maintenance-log.pdf": "updated", "heat-pumps.txt": "unchanged",
                              "alpine-lakes.pdf": "unchanged"}
    [log] = [o for o in off.files if o.source.endswith("maintenance-log.pdf")]
    assert log.ocr_pages == 0 and off.totals.ocr_pages == 0

    monkeypatch.setenv("INGEST_OCR", "auto")
    again = ingest_documents(sources=[str(folder)], collection="scans")
    assert _statuses(again) == {"maintenance-log.pdf": "updated", "heat-pumps.txt": "unchanged",
                                "alpine-lakes.pdf": "unchanged"}
    assert again.totals.ocr_pages == 1
    same = ingest_documents(sources=[str(folder)], collection="scans")
    assert set(_statuses(same).values()) == {"unchanged"} and same.totals.ocr_pages == 0
