"""The one typed payload of a stored point, and what the store reads back from it.

Every point is a chunk of a file. Its payload carries the chunk (text, pages, offsets) and, on
every point, the file's indexing record (content hash, settings fingerprint, listing signature).
The file's first point — its *head* — also carries the write protocol's commit marker
(``complete``, ``extent``; see ``store.base.VectorStore.replace_file_points``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

# Field names the store's write protocol and lookups use (checked against the model in tests).
SOURCE = "source"
COMPLETE = "complete"
EXTENT = "extent"
CHUNK_COUNT = "chunk_count"
SIGNATURE = "source_signature"


class PointPayload(BaseModel):
    """What one point holds besides its vector."""

    model_config = ConfigDict(frozen=True)

    # The chunk
    text: str
    chunk_index: int
    page_start: int | None
    page_end: int | None
    char_start: int
    char_end: int
    token_count: int
    #: Some of the chunk's text was recognised by OCR.
    ocr: bool
    # The file, repeated on each of its points so any hit can be cited and any point audited
    source: str
    file_name: str
    content_sha256: str
    config_fingerprint: str
    chunk_count: int
    page_count: int | None
    source_signature: str | None
    #: The file's OCR record: the engine and settings that read some of its pages ("" for none,
    #: see ``ocr.OcrConfig.key``) and how many pages lacked a text layer (PDFs).
    ocr_key: str
    textless_pages: int | None
    model: str
    embed_precision: str
    embed_backend: str
    ingested_at: str
    # The head's commit marker (head point only; set by the store's write protocol)
    complete: bool | None = None
    extent: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The payload as stored; the commit marker only where it is set."""
        return self.model_dump(exclude={name for name in (COMPLETE, EXTENT)
                                        if getattr(self, name) is None})


@dataclass(frozen=True)
class FileHead:
    """What the store holds for one source file, read from its head point's payload."""

    content_sha256: str
    config_fingerprint: str
    chunk_count: int
    page_count: int | None
    signature: str | None
    complete: bool  # the last write of this file finished: all its points are this version
    ocr_key: str = ""
    textless_pages: int | None = None

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> FileHead:
        return cls(content_sha256=payload.get("content_sha256", ""),
                   config_fingerprint=payload.get("config_fingerprint", ""),
                   chunk_count=int(payload.get(CHUNK_COUNT, 0)),
                   page_count=payload.get("page_count"), signature=payload.get(SIGNATURE),
                   complete=bool(payload.get(COMPLETE)),
                   ocr_key=payload.get("ocr_key", ""), textless_pages=payload.get("textless_pages"))


@dataclass(frozen=True)
class Hit:
    """A search hit: a chunk with its score, citing file and pages."""

    score: float
    source: str
    file_name: str
    page_start: int | None
    page_end: int | None
    chunk_index: int
    text: str

    @classmethod
    def from_payload(cls, score: float, payload: dict[str, Any]) -> Hit:
        return cls(score=round(score, 4), source=payload.get(SOURCE, ""),
                   file_name=payload.get("file_name", ""), page_start=payload.get("page_start"),
                   page_end=payload.get("page_end"), chunk_index=payload.get("chunk_index", -1),
                   text=payload.get("text", ""))

    @property
    def pages(self) -> str:
        """'p. 3' or 'pp. 3-4' for PDFs, '' for text files."""
        if self.page_start is None:
            return ""
        if self.page_end in (None, self.page_start):
            return f"p. {self.page_start}"
        return f"pp. {self.page_start}-{self.page_end}"

    def snippet(self, width: int = 160) -> str:
        flat = " ".join(self.text.split())
        return flat if len(flat) <= width else flat[: width - 1].rstrip() + "…"
