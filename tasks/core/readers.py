"""Turn a file's bytes into a ``Document`` (text per page), or reject it with a reason.

The type is decided by content: a PDF header makes a PDF whatever the name says, and a
``.pdf`` without one is never handed to the PDF parser. Text encodings are detected with
charset-normalizer. Every failure of pypdf — it raises far more than ``PdfReadError``, also from
inside ``extract_text()`` — ends as a ``FileRejected`` with a reason, never as a crash.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Callable
from pathlib import PurePosixPath

import filetype
from charset_normalizer import from_bytes

from tasks.core.errors import FileRejected
from tasks.core.models import Document, DocumentKind, Page, Reason

log = logging.getLogger(__name__)

TEXT_SUFFIXES = frozenset({".txt", ".text"})
# The PDF spec lets the header start anywhere in the first 1024 bytes.
PDF_MAGIC, PDF_HEADER_WINDOW = b"%PDF-", 1024
HEAD_BYTES = 8192
# Beyond this share of control/replacement characters a "text" is binary decoded by force;
# a few strays (a NUL, a form feed) are tolerated in any file.
MAX_GARBAGE_RATIO, GARBAGE_ALLOWANCE = 0.02, 8
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")


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


def clean_text(text: str) -> str:
    """Drop NULs and other control characters; make the text valid UTF-8 for the store."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text.replace("\ufeff", ""))
    # Lone surrogates (seen in pypdf output) cannot be stored as JSON.
    return text.encode("utf-8", "replace").decode("utf-8")


def check_text_size(chars: int, limit: int | None, where: str = "") -> None:
    """The one rule bounding the text a file may produce: ``too_large`` beyond ``limit``."""
    if limit is not None and chars > limit:
        raise FileRejected(Reason.TOO_LARGE, f"{chars:,} characters of text{where}, more than the "
                                             f"limit of {limit:,} (INGEST_MAX_FILE_CHARS)")


def read_text(data: bytes, *, max_chars: int | None = None) -> Document:
    """Decode a text file in whatever encoding it uses (BOMs, UTF-16/32, legacy code pages)."""
    digest = hashlib.sha256(data).hexdigest()
    if not data.strip(b" \t\r\n\x00\xef\xbb\xbf\xff\xfe"):
        raise FileRejected(Reason.EMPTY, "the file has no content")
    match = from_bytes(data).best()
    if match is None:
        guess = filetype.guess(data[:HEAD_BYTES])
        if guess is not None:
            raise FileRejected(Reason.UNSUPPORTED_TYPE, f"named .txt but the content is {guess.mime}")
        raise FileRejected(Reason.UNDECODABLE, "no text encoding fits the bytes (binary data?)")
    raw = str(match)
    check_text_size(len(raw), max_chars)
    garbage = len(_CONTROL.findall(raw))
    if garbage > MAX_GARBAGE_RATIO * len(raw) + GARBAGE_ALLOWANCE:
        raise FileRejected(Reason.UNDECODABLE,
                           f"decoded as {match.encoding} but {garbage} of {len(raw)} characters "
                           "are control or replacement characters")
    text = clean_text(raw)
    if not text.strip():
        raise FileRejected(Reason.EMPTY, "the file contains only white space")
    return Document(kind=DocumentKind.TEXT, pages=(Page(number=None, text=text),),
                    content_sha256=digest, encoding=match.encoding)


def read_pdf(data: bytes, *, max_pages: int, max_chars: int | None = None) -> Document:
    """Extract text page by page with pypdf; pages that fail are listed, not fatal. Stops as
    soon as the text exceeds ``max_chars`` (``too_large``)."""
    from pypdf import PasswordType, PdfReader

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
            log.warning("page %d: text extraction failed: %s: %s", number, type(exc).__name__, exc)
            unreadable.append(number)
            continue
        chars += len(text)
        check_text_size(chars, max_chars, f" by page {number} of {count}")
        pages.append(Page(number=number, text=clean_text(text)))
    if not pages:
        raise FileRejected(Reason.CORRUPT, f"text extraction failed on all {count} pages",
                           pages=count)
    if not any(page.text.strip() for page in pages):
        raise FileRejected(Reason.NO_TEXT,
                           f"no text layer on any of {count} pages (scanned? needs OCR)", pages=count)
    return Document(kind=DocumentKind.PDF, pages=tuple(pages), content_sha256=digest,
                    unreadable_pages=tuple(unreadable))


def read_document(data: bytes, name: str, *, max_pages: int, max_chars: int | None = None,
                  parse_pdf: Callable[..., Document] = read_pdf) -> Document:
    """Read any supported file: sniff the type from content, then parse or decode it.

    ``parse_pdf`` is where PDFs are parsed: here, or in an isolated worker (``isolation``).
    """
    if not data:
        raise FileRejected(Reason.EMPTY, "the file is empty (0 bytes)")
    kind = sniff_kind(data[:HEAD_BYTES], name)
    if kind is DocumentKind.PDF:
        return parse_pdf(data, max_pages=max_pages, max_chars=max_chars)
    return read_text(data, max_chars=max_chars)
