"""Batch sources: list files lazily and read their bytes through fsspec.

A source is a local folder or file, ``s3://bucket/prefix/`` or ``s3://bucket/key``. Listing is
a generator: S3 pages are fetched as the consumer asks for more, so a huge bucket starts
ingesting after its first page, not after its whole listing. S3 goes through s3fs with the
standard AWS configuration (``AWS_ENDPOINT_URL``, keys, profiles).
"""

from __future__ import annotations

import asyncio
import errno
import fnmatch
import os
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

import fsspec
from fsspec.asyn import sync

from tasks.core.errors import ConfigError, FileRejected, SourceUnavailableError
from tasks.core.models import Reason, SourceFile


def transient_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean 'the source did not answer', not 'the file is bad'."""
    types: list[type[BaseException]] = [OSError, asyncio.TimeoutError]
    try:  # botocore/aiohttp come with s3fs; a local-only install may lack them
        from botocore.exceptions import BotoCoreError
        types.append(BotoCoreError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from aiohttp import ClientError
        types.append(ClientError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


def local_path(source: str) -> Path:
    """A local source as a path: a plain path, or a ``file://`` URI (percent-decoded)."""
    if source.startswith("file://"):
        return Path(unquote(urlparse(source).path))
    return Path(source).expanduser()


def display_name(uri: str) -> str:
    """A source's file name as a person reads it (URIs are percent-encoded)."""
    return unquote(uri.rsplit("/", 1)[-1])


def is_hidden(relative: str) -> bool:
    """True when any component of a relative path starts with a dot."""
    return any(part.startswith(".") for part in PurePosixPath(relative).parts)


def matches_include(relative: str, include: Iterable[str]) -> bool:
    """Match globs against the path relative to the source root or the bare file name."""
    patterns = list(include)
    if not patterns:
        return True
    name = PurePosixPath(relative).name
    return any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(name, p) for p in patterns)


def filesystem(protocol: str) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem for ``protocol``; fsspec itself keeps one instance per protocol
    and options (s3fs keeps its own connection pool)."""
    return fsspec.filesystem(protocol)


def _local_file(path: Path) -> SourceFile:
    stat = path.stat()
    return SourceFile(uri=path.as_uri(), protocol="file", path=str(path), name=path.name,
                      size=stat.st_size,
                      modified=datetime.fromtimestamp(stat.st_mtime_ns / 1e9, tz=timezone.utc))


def _rejected(path: Path, reason: Reason, detail: str) -> SourceFile:
    return SourceFile(uri=path.as_uri(), protocol="file", path=str(path), name=path.name,
                      rejected=(reason, detail))


def _linked(path: Path, root: Path) -> SourceFile | None:
    """The listing's verdict on a symbolic link inside a source folder: ``None`` to list it
    as a file, else its rejection. The rule: a link is followed only to a target inside the
    source folder (an upload landing folder must not become a way to index ``/etc``); links to
    folders are never followed (what they hold inside the source is listed under its own path)."""
    try:
        target = path.resolve(strict=True)
    except FileNotFoundError:
        return _rejected(path, Reason.NOT_FOUND, "broken symbolic link (its target does not exist)")
    except (RuntimeError, OSError) as exc:  # a loop (RuntimeError before Python 3.13)
        return _rejected(path, Reason.NOT_FOUND, f"unusable symbolic link: {exc}")
    if not target.is_relative_to(root):
        return _rejected(path, Reason.OUTSIDE_SOURCE,
                         "symbolic link to a path outside the source folder; not followed")
    return None


def _iter_local(root: Path, include: list[str]) -> Iterator[SourceFile]:
    if root.is_file():
        yield _local_file(root)
        return
    if not root.is_dir():
        raise ConfigError(f"source not found: {root}")
    for dirpath, dirnames, filenames in os.walk(root):
        # Pruning in place keeps os.walk out of hidden folders; sorting keeps runs repeatable.
        # os.walk lists links to folders among the folders without entering them.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        linked_dirs = [d for d in dirnames if Path(dirpath, d).is_symlink()]
        for filename in sorted(filenames + linked_dirs):
            path = Path(dirpath, filename)
            relative = path.relative_to(root).as_posix()
            if is_hidden(relative) or not matches_include(relative, include):
                continue
            if path.is_symlink():
                verdict = _linked(path, root)
                if verdict is not None:
                    yield verdict
                    continue
            if path.is_file():
                yield _local_file(path)


def _s3_file(info: dict) -> SourceFile:
    name = info["name"]
    return SourceFile(uri=f"s3://{name}", protocol="s3", path=name,
                      name=PurePosixPath(name).name, size=info.get("size"),
                      etag=(info.get("ETag") or "").strip('"') or None,
                      modified=info.get("LastModified"))


def iter_s3_objects(bucket: str, prefix: str) -> Iterator[dict]:
    """s3fs info dicts of every object under ``s3://bucket/prefix``, folder markers left out.

    s3fs's ``_iterdir`` pages through ListObjectsV2 (each page retried by s3fs); an empty
    delimiter lists the whole subtree flat. Pulled one item at a time so nothing piles up.
    Errors are s3fs's own; callers translate them.
    """
    fs = filesystem("s3")
    pages = fs._iterdir(bucket, delimiter="", prefix=prefix)
    while True:
        try:
            info = sync(fs.loop, pages.__anext__)
        except StopAsyncIteration:
            return
        if info.get("type") == "file" and not info["name"].endswith("/"):
            yield info


def _iter_s3(url: str, include: list[str]) -> Iterator[SourceFile]:
    fs = filesystem("s3")
    path = url.removeprefix("s3://").strip("/")
    if not path:
        raise ConfigError("an S3 source needs a bucket: s3://bucket/prefix/")
    bucket, _, key = path.partition("/")
    try:
        if key and not url.endswith("/") and fs.isfile(path):
            yield _s3_file(fs.info(path))
            return
        prefix = f"{key.rstrip('/')}/" if key else ""
        listed_any = False
        for info in iter_s3_objects(bucket, prefix):
            listed_any = True
            relative = info["name"][len(bucket) + 1 + len(prefix):]
            if not relative or is_hidden(relative) or not matches_include(relative, include):
                continue
            yield _s3_file(info)
        if key and not url.endswith("/") and not listed_any:
            # A named key that is gone (deleted after its event, say) still gets its outcome
            # row (not_found) instead of vanishing from the run.
            yield SourceFile(uri=f"s3://{path}", protocol="s3", path=path, name=PurePosixPath(path).name)
    except FileNotFoundError as exc:
        raise ConfigError(f"source not found: {url}") from exc
    except PermissionError as exc:
        raise ConfigError(f"access denied to {url}: {exc}") from exc
    except transient_errors() as exc:
        raise SourceUnavailableError(f"cannot list {url}: {exc}") from exc


def discover_files(sources: Iterable[str], include: Iterable[str] = ()) -> Iterator[SourceFile]:
    """Yield every non-hidden file under each source that matches the include globs.

    A file named by two sources is yielded once. Raises ``ConfigError`` for a source that does
    not exist and ``SourceUnavailableError`` when a listing cannot be fetched.
    """
    patterns = list(include)
    sources = list(sources)
    # Only several sources can name a file twice; one source needs no (growing) memory of URIs.
    seen: set[str] | None = set() if len(sources) > 1 else None
    for source in sources:
        if source.startswith("s3://"):
            files = _iter_s3(source, patterns)
        elif "://" in source and not source.startswith("file://"):
            raise ConfigError(f"unsupported source scheme: {source} (use a local path or s3://)")
        else:
            try:
                root = local_path(source).resolve()
            except (RuntimeError, OSError) as exc:  # a symlink loop: RuntimeError before 3.13
                raise ConfigError(f"source {source} cannot be resolved: {exc}") from None
            files = _iter_local(root, patterns)
        for file in files:
            if seen is None:
                yield file
            elif file.uri not in seen:
                seen.add(file.uri)
                yield file


def check_sources(sources: Iterable[str]) -> None:
    """Fail fast, before a run starts, on a source that does not exist or cannot be listed.

    Costs one stat per local source and one listing request per S3 source.
    """
    for source in sources:
        for _ in discover_files([source]):
            break


def read_bytes(file: SourceFile, *, limit: int | None = None) -> bytes:
    """Read a file's bytes (or only its first ``limit`` bytes).

    A vanished or forbidden file is a ``FileRejected``; an unreachable source is a
    ``SourceUnavailableError`` (retried by the caller).
    """
    if file.size == 0:
        return b""
    try:
        if file.protocol == "file":
            with open(file.path, "rb") as handle:
                return handle.read(limit) if limit is not None else handle.read()
        fs = filesystem(file.protocol)
        if limit is not None and (file.size is None or file.size > limit):
            return fs.cat_file(file.path, start=0, end=limit)
        # No range when the whole object fits: S3 refuses ranges on empty objects.
        return fs.cat_file(file.path)
    except FileNotFoundError as exc:
        raise FileRejected(Reason.NOT_FOUND, "file disappeared before it was read") from exc
    except IsADirectoryError as exc:
        raise FileRejected(Reason.NOT_FOUND, "path is a directory, not a file") from exc
    except PermissionError as exc:
        raise FileRejected(Reason.ACCESS_DENIED, f"access denied: {exc}") from exc
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # s3fs's translation of a request S3 will never accept
            raise FileRejected(Reason.ERROR, f"the source refused the read: {exc}") from exc
        raise SourceUnavailableError(f"cannot read {file.uri}: {type(exc).__name__}: {exc}") from exc
    except transient_errors() as exc:
        raise SourceUnavailableError(f"cannot read {file.uri}: {type(exc).__name__}: {exc}") from exc
