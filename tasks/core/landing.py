"""The landing area for uploaded files: safe names, atomic writes, a local folder or S3 prefix.

An uploaded file lands under its own (checked) name, so uploading the same document again
addresses the same source and re-runs see it as ``unchanged`` or ``updated``. Names that try to
leave the landing area are refused, two uploads of one name in a request are kept apart, and a
file only appears under its name once it is complete.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from tasks.core.errors import IngestError
from tasks.core.sources import filesystem

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME = 200


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
    if len(name) > MAX_NAME:
        raise UploadRejected(400, f"file name is longer than {MAX_NAME} characters")
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

    def write(self, name: str, stream: BinaryIO, *, limit: int, chunk: int = 1 << 20) -> int:
        """Copy ``stream`` to ``name``, at most ``limit`` bytes; returns the size.

        Written to a temporary name and renamed when complete (S3: the object appears only
        when its upload completes), so nothing half-written ever carries the real name.
        """
        size = 0
        if self.s3:
            fs, path = filesystem("s3"), self.uri(name).removeprefix("s3://")
            temporary = f"{path}.part-{uuid.uuid4().hex}"
            opener = fs.open(temporary, "wb")
        else:
            Path(self.root).mkdir(parents=True, exist_ok=True)
            path = str(Path(self.root, name))
            temporary = str(Path(self.root, f".{name}.part-{uuid.uuid4().hex}"))
            opener = open(temporary, "wb")
        try:
            with opener as target:
                while block := stream.read(chunk):
                    size += len(block)
                    if size > limit:
                        raise UploadRejected(413, f"{name} is larger than the limit of {limit} bytes")
                    target.write(block)
            if self.s3:
                fs.mv(temporary, path)
            else:
                os.replace(temporary, path)
        except BaseException:
            self._remove(temporary)
            raise
        return size

    def _remove(self, path: str) -> None:
        try:
            if self.s3:
                filesystem("s3").rm(path)
            else:
                os.unlink(path)
        except (FileNotFoundError, OSError):
            pass
