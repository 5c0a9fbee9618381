"""Text for PDF pages without a text layer, by optical character recognition (extra ``[ocr]``).

The engine is RapidOCR (PP-OCR detection and recognition models inside the ``rapidocr`` wheel,
run by onnxruntime); pages are rendered by PDFium (``pypdfium2``, inside its wheel). Nothing is
downloaded at run time and no system package is needed. Only the pages that need it are
rendered: in ``auto`` mode, those whose text layer has fewer than ``MIN_LAYER_CHARS`` letters
and digits (a scan with no layer, or a layer holding only a page number or a stamp); in
``force`` mode, every page.

Recognition runs where PDFs are parsed (the parse workers, under their limits); the engine is
loaded on a process's first OCR page and kept for the process's life (``recognizer()``), so a
batch without scans never imports it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

OcrMode = Literal["auto", "off", "force"]
ENGINE = "rapidocr"
EXTRA_HINT = "install the OCR extra: pip install 'knowledge-ingest[ocr]'"
#: A page whose text layer has fewer letters and digits than this is read by OCR in ``auto``
#: mode: scans often carry a page number, a date stamp or "Scanned by …" as their only text,
#: while a real page of text has hundreds.
MIN_LAYER_CHARS = 20
#: Address space a parse worker is allowed beyond INGEST_PARSE_MEMORY_MB once it has loaded the
#: engine: onnxruntime, the models and a page's activations reserve it (an A4 page at 200 dpi
#: peaked at ~1.2 GB of address space, ~0.75 GB resident; with only 1 GB the engine ran out).
OCR_ADDRESS_SPACE_MB = 1024
#: Recognised lines scoring below this (0-1, the engine's confidence) are dropped as noise.
MIN_LINE_SCORE = 0.5


class OcrPageTimeout(Exception):
    """A page's recognition used up its CPU budget (``INGEST_OCR_PAGE_TIMEOUT``)."""


def available() -> bool:
    """The ``[ocr]`` extra is installed (engine, runtime and renderer)."""
    return all(importlib.util.find_spec(name) is not None
               for name in ("rapidocr", "onnxruntime", "pypdfium2"))


def engine_version() -> str:
    """``rapidocr-3.10.0``: the engine and version that recognise pages (its models come with
    it), as recorded in the indexing fingerprint."""
    try:
        return f"{ENGINE}-{importlib.metadata.version(ENGINE)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{ENGINE}-missing"


def needs_ocr(text: str) -> bool:
    """The ``auto`` rule: the page's text layer is empty or nearly so."""
    return sum(c.isalnum() for c in text) < MIN_LAYER_CHARS


@dataclass(frozen=True)
class OcrConfig:
    """How PDFs are OCR'd; travels to the parse workers."""

    mode: OcrMode = "off"
    dpi: int = 200
    max_pages: int = 100
    page_timeout_s: float = 60.0
    engine: str = ""  # engine_version() where the config was made; "" when off

    def key(self, textless_pages: int) -> str:
        """What a PDF's points record of OCR, given how many of its pages lacked a text layer.
        Equal keys mean OCR could not change the file's text; a file whose recorded key differs
        is read again."""
        if self.mode == "off" or (self.mode == "auto" and textless_pages == 0):
            return ""
        return f"{self.engine}:{self.mode}:{self.dpi}dpi"

    def pages_to_read(self, layers: dict[int, str]) -> list[int]:
        """The pages to OCR, in order, before the page cap: every page in ``force`` mode, the
        pages whose layer ``needs_ocr`` in ``auto``."""
        if self.mode == "off":
            return []
        return [n for n, text in sorted(layers.items()) if self.mode == "force" or needs_ocr(text)]


class Recognizer:
    """The engine, loaded once per process. One page at a time (the engine is not
    thread-safe; parse workers are single-threaded anyway)."""

    def __init__(self) -> None:
        from rapidocr import RapidOCR

        # One thread: two threads were slower than one per page on this machine's 2 cores
        # (2.0 s vs 1.6 s), and parse workers already run side by side.
        self._engine = RapidOCR(params={
            "Global.log_level": "error",
            # No per-line 0/180-degree classifier: it turned upright lines of ordinary scans
            # upside down (a whole line garbled, CER 0.23 on a test page; 0.0 without it).
            "Global.use_cls": False,
            "EngineConfig.onnxruntime.intra_op_num_threads": 1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        })
        self._lock = threading.Lock()

    def page_text(self, image) -> str:
        """The text of a page image (RGB array), line by line in reading order."""
        with self._lock:
            result = self._engine(image)
        texts, scores = getattr(result, "txts", None) or (), getattr(result, "scores", None) or ()
        return "\n".join(text for text, score in zip(texts, scores)
                         if score >= MIN_LINE_SCORE and text.strip())


_recognizer: Recognizer | None = None
_recognizer_lock = threading.Lock()


def recognizer() -> Recognizer:
    """This process's engine, created on first use."""
    global _recognizer
    with _recognizer_lock:
        if _recognizer is None:
            _recognizer = Recognizer()
        return _recognizer


@dataclass(frozen=True)
class OcrResult:
    """What OCR made of a document's pages: text per page it read, the pages it gave up on
    (with why), and the pages left alone because of the page cap."""

    texts: dict[int, str]
    failed: dict[int, str]
    capped: tuple[int, ...]


PageBudget = Callable[[float], AbstractContextManager]


def recognise(data: bytes, pages: Iterable[int], config: OcrConfig, *,
              page_budget: PageBudget | None = None) -> OcrResult:
    """OCR ``pages`` (numbered from 1) of the PDF ``data``, at most ``config.max_pages`` of them.

    ``page_budget(seconds)`` bounds each page's CPU (the parse workers raise ``OcrPageTimeout``
    inside it); a page that fails or runs out of time is listed, not fatal. Rendering failures
    of the whole file (PDFium cannot open it) fail every page the same way.
    """
    wanted = list(pages)
    todo, capped = wanted[:config.max_pages], tuple(wanted[config.max_pages:])
    texts: dict[int, str] = {}
    failed: dict[int, str] = {}
    if not todo:
        return OcrResult(texts, failed, capped)
    import numpy as np
    import pypdfium2  # the [ocr] extra: imported only when a page needs it

    try:
        document = pypdfium2.PdfDocument(data)
    except Exception as exc:  # noqa: BLE001 (PDFium refuses some files pypdf repairs)
        reason = f"not renderable: {exc}"
        return OcrResult({}, {n: reason for n in todo}, capped)
    budget = page_budget or (lambda seconds: nullcontext())
    try:
        for number in todo:
            try:
                with budget(config.page_timeout_s):
                    page = document[number - 1]
                    bitmap = page.render(scale=config.dpi / 72, grayscale=True)
                    image = np.asarray(bitmap.to_pil().convert("RGB"))
                    page.close()
                    # Loaded inside the budget: the worker raises its memory limit there.
                    texts[number] = recognizer().page_text(image)
            except OcrPageTimeout:
                failed[number] = (f"more than {config.page_timeout_s:g} s of CPU "
                                  "(INGEST_OCR_PAGE_TIMEOUT)")
            except MemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 (one page's failure is that page's)
                if "bad_alloc" in str(exc):
                    # onnxruntime's C++ allocation failed at the worker's memory limit: the
                    # same limit as parsing, the same outcome (too_large).
                    raise MemoryError from exc
                log.debug("OCR of page %d failed: %s: %s", number, type(exc).__name__, exc)
                failed[number] = f"{type(exc).__name__}: {_message_line(str(exc))}"
    finally:
        document.close()
    return OcrResult(texts, failed, capped)


def _message_line(message: str, width: int = 160) -> str:
    """An engine error's message line (its last: onnxruntime's errors carry a traceback before it),
    short enough for a file's row."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= width else line[: width - 1] + "…"
