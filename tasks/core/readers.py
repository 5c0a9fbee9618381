"""Turn a file's bytes into a ``Document`` (text per page), or reject it with a reason.

The type is decided by content: a PDF header makes a PDF whatever the name says, and a
``.pdf`` without one is never handed to the PDF parser. Text encodings are detected with
charset-normalizer. Every failure of pypdf — it raises far more than ``PdfReadError``, also from
inside ``extract_text()`` — ends as a ``FileRejected`` with a reason, never as a crash.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import hashlib
import io
import logging
import re
import threading
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import PurePosixPath

import filetype
from charset_normalizer import from_bytes

from tasks.core import pdf_spacing
from tasks.core.errors import FileRejected
from tasks.core.models import Document, DocumentKind, Page, Reason
from tasks.core.ocr import EXTRA_HINT, OcrConfig, PageBudget, needs_ocr, recognise
from tasks.core.ocr import available as ocr_available

log = logging.getLogger(__name__)

TEXT_SUFFIXES = frozenset({".txt", ".text"})
# The PDF spec lets the header start anywhere in the first 1024 bytes.
PDF_MAGIC, PDF_HEADER_WINDOW = b"%PDF-", 1024
HEAD_BYTES = 8192
# Beyond this share of control/replacement characters a "text" is binary decoded by force;
# a few strays (a NUL, a form feed) are tolerated in any file.
MAX_GARBAGE_RATIO, GARBAGE_ALLOWANCE = 0.02, 8
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")


#: Parser warnings kept per file (all are counted).
KEPT_WARNINGS = 3


class _WarningCapture(logging.Handler):
    """Collects the warnings a library logs while one thread reads one file.

    pypdf reports what it repaired through ``logging`` (thousands of lines on some real
    batches, e.g. one per font when fontTools is missing); they belong to the file, not to
    standard error.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: dict[int, int] = {}
        self.kept: dict[int, list[str]] = {}
        self.lock_ = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        thread = record.thread or 0
        with self.lock_:
            if thread not in self.counts:
                return  # a thread not reading a file: leave it to the usual handlers
            self.counts[thread] += 1
            kept = self.kept[thread]
            if len(kept) < KEPT_WARNINGS:
                try:
                    kept.append(" ".join(record.getMessage().split())[:200])
                except Exception:  # noqa: BLE001 (a malformed record must not break a read)
                    kept.append(str(record.msg)[:200])


_capture = _WarningCapture()
_capture_users = 0
_capture_guard = threading.Lock()


@contextlib.contextmanager
def captured_warnings(logger_name: str = "pypdf") -> Iterator[tuple[list[int], list[str]]]:
    """Capture what ``logger_name`` warns about in this thread: yields ``(count, kept)`` lists
    filled in when the block ends; meanwhile those warnings do not reach standard error."""
    global _capture_users
    thread = threading.get_ident()
    logger = logging.getLogger(logger_name)
    with _capture_guard:
        if _capture_users == 0:
            logger.addHandler(_capture)
            logger.propagate = False
        _capture_users += 1
    with _capture.lock_:
        _capture.counts[thread], _capture.kept[thread] = 0, []
    count: list[int] = [0]
    kept: list[str] = []
    try:
        yield count, kept
    finally:
        with _capture.lock_:
            count[0] = _capture.counts.pop(thread, 0)
            kept.extend(_capture.kept.pop(thread, []))
        with _capture_guard:
            _capture_users -= 1
            if _capture_users == 0:
                logger.removeHandler(_capture)
                logger.propagate = True


def sniff_kind(head: bytes, name: str) -> DocumentKind:
    """Decide how to read a file from its first bytes and its name.

    Raises ``FileRejected`` (``unsupported_type`` or ``corrupt``) for anything that is neither
    a PDF nor a ``.txt`` file.
    """
    if PDF_MAGIC in head[:PDF_HEADER_WINDOW]:
        return DocumentKind.PDF
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in TEXT_SUFFIXES:
        # Decodability decides for text (see read_text): weak magic numbers such as BMP's "BM"
        # would otherwise reject ordinary prose.
        return DocumentKind.TEXT
    guess = filetype.guess(head)
    if suffix == ".pdf":
        if guess is not None:
            raise FileRejected(Reason.UNSUPPORTED_TYPE,
                               f"named .pdf but the content is {guess.mime}")
        raise FileRejected(Reason.CORRUPT, "named .pdf but has no PDF header")
    what = f"content is {guess.mime}" if guess else f"extension {suffix or '(none)'}"
    raise FileRejected(Reason.UNSUPPORTED_TYPE, f"not a PDF or .txt file ({what})")


# Typographic ligatures (U+FB00-FB06) as PDFs often encode them: "misﬁts" is "misfits" to a
# reader, but neither the model's tokenizer nor a keyword index folds them.
_LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi",
                            "\ufb04": "ffl", "\ufb05": "st", "\ufb06": "st"})


# Accents that PDFs made with old TeX fonts (OT1) draw as a separate glyph before the letter:
# pypdf gives "F¨ur" and "´ecole" for "Für" and "école". Folded into the letter when Unicode has
# the accented letter; a dotless i under an accent is the plain i it stands for.
_SPACING_ACCENTS = {"\u00a8": "\u0308", "\u00b4": "\u0301", "\u02c6": "\u0302", "\u02dc": "\u0303",
                    "\u02c7": "\u030c", "\u02da": "\u030a", "\u02d8": "\u0306", "\u02dd": "\u030b"}
_ACCENT_THEN_LETTER = re.compile(f"([{''.join(_SPACING_ACCENTS)}])([A-Za-z\u0131])")


def _fold_accent(match: re.Match) -> str:
    letter = "i" if match[2] == "\u0131" else match[2]
    composed = unicodedata.normalize("NFC", letter + _SPACING_ACCENTS[match[1]])
    return composed if len(composed) == 1 else match[0]


def clean_text(text: str) -> str:
    """Drop NULs and other control characters, unfold typographic ligatures, fold spacing
    accents into their letters; make the text valid UTF-8 for the store."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_LIGATURES)
    text = _ACCENT_THEN_LETTER.sub(_fold_accent, text)
    text = _CONTROL.sub("", text.replace("\ufeff", ""))
    # Lone surrogates (seen in pypdf output) cannot be stored as JSON.
    return text.encode("utf-8", "replace").decode("utf-8")


# A word a typesetter split at the end of a line ("Ände-\nrungen"): joined again when the
# line goes on in lower case. A hyphen before a capital ("Arbeiter-\nUnfall") is kept.
_LINE_END_HYPHEN = re.compile(r"(?<=[^\W\d_])[-\u00ad]\n[ \t]*(?=[^\W\d_A-Z\u00c0-\u00de])")


def join_hyphenated(text: str) -> str:
    """PDF text with the words split at line ends put back together."""
    return _LINE_END_HYPHEN.sub("", text)


def check_text_size(chars: int, limit: int | None, where: str = "") -> None:
    """The one rule bounding the text a file may produce: ``too_large`` beyond ``limit``."""
    if limit is not None and chars > limit:
        raise FileRejected(Reason.TOO_LARGE, f"{chars:,} characters of text{where}, more than the "
                                             f"limit of {limit:,} (INGEST_MAX_FILE_CHARS)")


# 7-bit encodings that switch character sets with escape sequences: charset-normalizer takes
# them for ASCII/UTF-8 full of control characters. Each is recognised by its designators.
_ESCAPE_ENCODINGS = (
    ("iso2022_jp_2", (b"\x1b$B", b"\x1b$@", b"\x1b$A", b"\x1b$(C", b"\x1b$(D", b"\x1b(J", b"\x1b(I")),
    ("iso2022_kr", (b"\x1b$)C",)),
    ("hz", (b"~{",)),
)
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _escape_encoded(data: bytes) -> tuple[str, str] | None:
    """``(text, encoding)`` for ISO-2022-JP/KR or HZ text, else ``None``."""
    if max(data, default=0) >= 0x80:
        return None  # these encodings are 7-bit
    for encoding, designators in _ESCAPE_ENCODINGS:
        if any(d in data for d in designators):
            if encoding == "hz" and b"~}" not in data:
                continue
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError:
                continue
            if any(ord(c) > 0x7F for c in text):
                return text, encoding
    return None


def _decode(data: bytes) -> tuple[str, str, tuple[str, ...]]:
    """``(text, encoding, repairs)``, or ``FileRejected``."""
    escaped = _escape_encoded(data)
    if escaped is not None:
        return escaped[0], escaped[1], ()
    repairs: tuple[str, ...] = ()
    if len(data) % 2 and (data[:2] in _UTF16_BOMS or data.count(b"\x00") > len(data) // 4):
        # UTF-16 (a BOM, or NULs in every other byte of mostly-Latin text) with an odd number
        # of bytes, as a truncated copy leaves it: the last byte is half a character.
        data, repairs = data[:-1], ("dropped a dangling last byte (UTF-16 of odd length)",)
    match = from_bytes(data).best()
    if match is None:
        guess = filetype.guess(data[:HEAD_BYTES])
        if guess is not None:
            raise FileRejected(Reason.UNSUPPORTED_TYPE, f"named .txt but the content is {guess.mime}")
        raise FileRejected(Reason.UNDECODABLE, "no text encoding fits the bytes (binary data?)")
    return str(match), match.encoding, repairs


def read_text(data: bytes, *, max_chars: int | None = None) -> Document:
    """Decode a text file in whatever encoding it uses (BOMs, UTF-16/32, legacy code pages,
    ISO-2022 and HZ escape sequences)."""
    digest = hashlib.sha256(data).hexdigest()
    if not data.strip(b" \t\r\n\x00\xef\xbb\xbf\xff\xfe"):
        raise FileRejected(Reason.EMPTY, "the file has no content")
    raw, encoding, repairs = _decode(data)
    check_text_size(len(raw), max_chars)
    garbage = len(_CONTROL.findall(raw))
    if garbage > MAX_GARBAGE_RATIO * len(raw) + GARBAGE_ALLOWANCE:
        raise FileRejected(Reason.UNDECODABLE,
                           f"decoded as {encoding} but {garbage} of {len(raw)} characters "
                           "are control or replacement characters")
    text = clean_text(raw)
    if not text.strip():
        raise FileRejected(Reason.EMPTY, "the file contains only white space")
    return Document(kind=DocumentKind.TEXT, pages=(Page(number=None, text=text),),
                    content_sha256=digest, encoding=encoding, repairs=repairs)


def read_pdf(data: bytes, *, max_pages: int, max_chars: int | None = None,
             ocr: OcrConfig | None = None, page_budget: PageBudget | None = None) -> Document:
    """Extract text page by page with pypdf; pages that fail are listed, not fatal. Stops as
    soon as the text exceeds ``max_chars`` (``too_large``). Pages without a text layer are
    recognised by OCR as ``ocr`` says (``page_budget`` bounds each page's CPU). pypdf's warnings
    are counted on the document (the first few kept), not printed."""
    with captured_warnings("pypdf") as (count, kept):
        document = _extract_pdf(data, max_pages=max_pages, max_chars=max_chars)
    if count[0]:
        log.debug("pypdf: %d warnings, first: %s", count[0], kept)
    document = dataclasses.replace(document, warning_count=count[0], warnings=tuple(kept))
    return _with_ocr(document, data, ocr or OcrConfig(), max_chars, page_budget)


def _extract_pdf(data: bytes, *, max_pages: int, max_chars: int | None) -> Document:
    """pypdf's text of every page (empty pages included; OCR decides about them)."""
    from pypdf import PasswordType, PdfReader

    pdf_spacing.install()
    digest = hashlib.sha256(data).hexdigest()
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise FileRejected(Reason.ENCRYPTED, "the PDF needs a password (the empty one failed)")
        count = len(reader.pages)
    except (FileRejected, MemoryError):
        raise
    except Exception as exc:  # pypdf raises many types (ValueError, KeyError, struct.error, ...)
        raise FileRejected(Reason.CORRUPT, f"unreadable PDF: {type(exc).__name__}: {exc}") from exc
    if count == 0:
        raise FileRejected(Reason.EMPTY, "the PDF has no pages")
    if count > max_pages:
        raise FileRejected(Reason.TOO_LARGE, f"{count} pages, more than the limit of {max_pages}",
                           pages=count)
    pages: list[Page] = []
    unreadable: list[int] = []
    chars = 0
    for number in range(1, count + 1):
        try:
            text = reader.pages[number - 1].extract_text() or ""
        except MemoryError:
            raise
        except Exception as exc:  # a broken content stream spoils one page, not the file
            log.debug("page %d: text extraction failed: %s: %s", number, type(exc).__name__, exc)
            unreadable.append(number)
            continue
        chars += len(text)
        check_text_size(chars, max_chars, f" by page {number} of {count}")
        pages.append(Page(number=number, text=join_hyphenated(clean_text(text))))
    return Document(kind=DocumentKind.PDF, pages=tuple(pages), content_sha256=digest,
                    unreadable_pages=tuple(unreadable),
                    textless_pages=len(unreadable) + sum(needs_ocr(p.text) for p in pages))


def _with_ocr(document: Document, data: bytes, config: OcrConfig, max_chars: int | None,
              page_budget: PageBudget | None) -> Document:
    """The document with OCR's text on the pages ``config`` selects (pages pypdf could not read
    included), or ``FileRejected`` when no page has text in the end."""
    layers = {page.number: page.text for page in document.pages}
    layers.update({number: "" for number in document.unreadable_pages})
    count = len(layers)
    result = recognise(data, config.pages_to_read(layers), config, page_budget=page_budget)
    pages, unreadable = [], []
    for number in sorted(layers):
        text = result.texts.get(number)
        # OCR's text replaces the layer when it has more letters and digits; in force mode
        # whenever it found any (a layer that is there but garbage is what force is for).
        found = sum(map(str.isalnum, text or ""))
        recognised = found > 0 and (config.mode == "force"
                                    or found > sum(map(str.isalnum, layers[number])))
        if recognised:
            # OCR keeps the page's line breaks: words a typesetter split are joined as in pypdf's text.
            pages.append(Page(number=number, text=join_hyphenated(clean_text(text)), ocr=True))
        elif number in document.unreadable_pages:
            unreadable.append(number)
        else:
            pages.append(Page(number=number, text=layers[number]))
    check_text_size(sum(len(p.text) for p in pages), max_chars, " with OCR's text")
    if not pages:
        raise FileRejected(Reason.CORRUPT, f"text extraction failed on all {count} pages",
                           pages=count)
    if not any(page.text.strip() for page in pages):
        if config.mode == "off":
            hint = EXTRA_HINT if not ocr_available() else "OCR is off (INGEST_OCR=off)"
            raise FileRejected(Reason.NO_TEXT, f"no text layer on any of {count} pages "
                                               f"(scanned? {hint})", pages=count)
        why = (f"; page {next(iter(result.failed))}: {next(iter(result.failed.values()))}"
               if result.failed else "")
        raise FileRejected(Reason.NO_TEXT, f"no text layer on any of {count} pages, and OCR "
                                           f"found no text on them{why}", pages=count)
    return dataclasses.replace(document, pages=tuple(pages), unreadable_pages=tuple(unreadable),
                               ocr_failed=tuple(sorted(result.failed.items())),
                               ocr_capped=result.capped)


def read_document(data: bytes, name: str, *, max_pages: int, max_chars: int | None = None,
                  ocr: OcrConfig | None = None,
                  parse_pdf: Callable[..., Document] = read_pdf) -> Document:
    """Read any supported file: sniff the type from content, then parse or decode it.

    ``parse_pdf`` is where PDFs are parsed: here, or in an isolated worker (``isolation``).
    """
    if not data:
        raise FileRejected(Reason.EMPTY, "the file is empty (0 bytes)")
    kind = sniff_kind(data[:HEAD_BYTES], name)
    if kind is DocumentKind.PDF:
        return parse_pdf(data, max_pages=max_pages, max_chars=max_chars, ocr=ocr)
    return read_text(data, max_chars=max_chars)
