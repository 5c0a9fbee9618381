"""The landing area for uploaded files: safe names, atomic writes, a local folder or S3 prefix.

An uploaded file lands under its own (checked) name, so uploading the same document again
addresses the same source and re-runs see it as ``unchanged`` or ``updated``. Names that try to
leave the landing area are refused, two uploads of one name in a request are kept apart, and a
file only appears under its name once it is complete. A request's files land all or none.

Names are limited in bytes (UTF-8), not characters: file systems allow 255 bytes per name, and
the landing adds a temporary suffix and, for a repeated name, `` (N)``; 72 Chinese characters
(216 bytes) used to overflow that and fail half-way through a request.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from tasks.core.errors import IngestError
from tasks.core.sources import filesystem, local_path

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Bytes (UTF-8) of an uploaded file's name.
MAX_NAME_BYTES = 200
#: What ``Landing`` adds to a name while a file is written: ``.`` + ``.part-`` + 16 hex digits.
_TEMPORARY = ".part-{}"
_TOKEN_HEX = 16
#: The most bytes a file system takes for one name.
FS_NAME_BYTES = 255


class UploadRejected(IngestError):
    """An upload refused as a whole; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def checked_name(name: str | None) -> str:
    """The upload's file name, or ``UploadRejected`` (400) for one that could escape or hide."""
    if not name or not name.strip():
        raise UploadRejected(400, "an uploaded file has no name")
    if _CONTROL.search(name):
        raise UploadRejected(400, f"file name {name!r} contains control characters")
    if "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        raise UploadRejected(400, f"file name {name!r} is not a plain, visible file name "
                                  "(no folders, no '..', no leading dot)")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise UploadRejected(400, f"file name {name!r} is not valid Unicode") from None
    if size > MAX_NAME_BYTES:
        raise UploadRejected(400, f"file name is {size} bytes long in UTF-8, more than the limit "
                                  f"of {MAX_NAME_BYTES} bytes")
    return name


def distinct_names(names: Iterable[str]) -> list[str]:
    """Keep same-named uploads of one request apart: ``a.pdf``, ``a (2).pdf``, ``a (3).pdf``."""
    seen: set[str] = set()
    result = []
    for name in names:
        candidate, n = name, 1
        path = PurePosixPath(name)
        while candidate.lower() in seen:
            n += 1
            candidate = f"{path.stem} ({n}){path.suffix}"
        seen.add(candidate.lower())
        result.append(candidate)
    return result


class Landing:
    """Where uploads are written: a local folder or ``s3://bucket/prefix``."""

    def __init__(self, location: str) -> None:
        self.s3 = location.startswith("s3://")
        self.root = location.rstrip("/") if self.s3 else str(Path(location).expanduser().resolve())

    def uri(self, name: str) -> str:
        """The source the pipeline reads for a landed file (what it is indexed under)."""
        return f"{self.root}/{name}" if self.s3 else Path(self.root, name).as_uri()

    def land(self, files: list[tuple[str, BinaryIO]], *, limit: int) -> list[str]:
        """Land every ``(name, stream)``, at most ``limit`` bytes each; returns their URIs.

        All or none: each file is written to a temporary name first, and only when all of them
        are complete are they renamed to their names (on S3 an object appears only once its
        upload completes). If anything fails, what was written is removed.
        """
        written: list[tuple[str, str]] = []  # (temporary, final) paths
        try:
            for name, stream in files:
                written.append(self._write_temporary(name, stream, limit=limit))
        except BaseException:
            for temporary, _ in written:
                self._remove(temporary)
            raise
        landed: list[str] = []
        try:
            for temporary, path in written:
                if self.s3:
                    filesystem("s3").mv(temporary, path)
                else:
                    os.replace(temporary, path)
                landed.append(path)
        except BaseException:
            for temporary, _ in written:
                self._remove(temporary)
            for path in landed:
                self._remove(path)
            raise
        return [self.uri(name) for name, _ in files]

    def remove(self, uris: list[str]) -> None:
        """Remove landed files (of an upload whose run could not happen)."""
        for uri in uris:
            self._remove(uri.removeprefix("s3://") if self.s3 else local_path(uri))

    def _write_temporary(self, name: str, stream: BinaryIO, *, limit: int,
                         chunk: int = 1 << 20) -> tuple[str, str]:
        suffix = _TEMPORARY.format(uuid.uuid4().hex[:_TOKEN_HEX])
        if len(f".{name}{suffix}".encode()) > FS_NAME_BYTES:  # after " (N)" was added
            raise UploadRejected(400, f"file name {name!r} is too long to land "
                                      f"(at most {MAX_NAME_BYTES} bytes in UTF-8)")
        size = 0
        if self.s3:
            fs, path = filesystem("s3"), self.uri(name).removeprefix("s3://")
            temporary = f"{path}{suffix}"
            opener = fs.open(temporary, "wb")
        else:
            Path(self.root).mkdir(parents=True, exist_ok=True)
            path = str(Path(self.root, name))
            temporary = str(Path(self.root, f".{name}{suffix}"))
            opener = open(temporary, "wb")
        try:
            with opener as target:
                while block := stream.read(chunk):
                    size += len(block)
                    if size > limit:
                        raise UploadRejected(413, f"{name} is larger than the limit of {limit} bytes")
                    target.write(block)
        except BaseException:
            self._remove(temporary)
            raise
        return temporary, path

    def _remove(self, path: str | Path) -> None:
        try:
            if self.s3:
                filesystem("s3").rm(path)
            else:
                os.unlink(path)
        except (FileNotFoundError, OSError):
            pass
