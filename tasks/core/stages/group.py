"""What travels between stages: a group of files, per-file guards, and retry bookkeeping."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tasks.core.errors import FileRejected, TransientError
from tasks.core.models import FileOutcome, Reason, SourceFile
from tasks.core.sources import display_name

log = logging.getLogger(__name__)

#: The files of a run's first group; the next ones double up to INGEST_FILES_PER_TASK
#: (``group_files``).
FIRST_GROUP_FILES = 2

T = TypeVar("T")
U = TypeVar("U")
F = TypeVar("F", bound="SourceFile")


@dataclass(frozen=True)
class Settled:
    """A file whose outcome is known before the store stage. ``signature``: an unchanged
    file's new listing signature, for the store stage to record (a touched file)."""

    outcome: FileOutcome
    signature: str | None = None


@dataclass(frozen=True)
class Group(Generic[T]):
    """A group of files on its way through the stages (each stage is one task run over it).

    ``sources`` are the group's URIs in listing order (every stage keeps them, so the last one
    answers for each); ``files`` the records still in the chain; ``settled`` the files already
    decided; ``seconds`` what each stage spent on the group so far (``embed``: the model's
    working time).
    """

    sources: tuple[str, ...]
    files: tuple[T, ...] = ()
    settled: tuple[Settled, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)

    def then(self, stage: str, seconds: float, files: Iterable[U],
             settled: Iterable[Settled] = ()) -> Group[U]:
        """The group after ``stage``: its new records, more settled files, its time added."""
        return Group(sources=self.sources, files=tuple(files),
                     settled=self.settled + tuple(settled),
                     seconds={**self.seconds, stage: self.seconds.get(stage, 0.0) + seconds})

    def names(self) -> list[str]:
        """The group's file names as a person reads them, in listing order."""
        return [display_name(uri) for uri in self.sources]


@dataclass(frozen=True)
class GroupResult:
    """What the last stage returns: one outcome per file of the group, and the seconds each
    stage spent on it."""

    outcomes: tuple[FileOutcome, ...]
    seconds: dict[str, float]


def group_files(files: Iterable[F], *, max_files: int, max_bytes: int,
                first_files: int | None = None) -> Iterator[list[F]]:
    """Cut a listing into groups of at most ``max_files`` files and ``max_bytes`` of listed size
    (a file larger than that alone; a file of unknown size counts as 0), in listing order and
    as it streams.

    What a group holds between stages — its documents' text, chunks and vectors — grows with
    its files' sizes, not their number: the byte bound keeps a group of 24 books from holding
    what a group of 24 memos does several hundred times over.

    ``first_files``: the first group holds at most this many files and each next one twice as
    many, up to ``max_files``. The model waits for a whole first group to be read and chunked
    before it starts (1.5 s of a 40-second, 100-file run with groups of 24); a small first group
    puts it to work at once while the larger ones behind it are read.
    """
    limit = min(first_files or max_files, max_files)
    group: list[F] = []
    size = 0
    for file in files:
        file_size = file.size or 0
        if group and size + file_size > max_bytes:
            yield group
            group, size, limit = [], 0, min(limit * 2, max_files)
        group.append(file)
        size += file_size
        if len(group) >= limit:
            yield group
            group, size, limit = [], 0, min(limit * 2, max_files)
    if group:
        yield group


def group_label(verb: str, names: list[str], *, shown: int = 2) -> str:
    """A task run's name: ``embed 24 files: a.pdf, b.txt …`` (``read a.pdf`` for one)."""
    if len(names) == 1:
        return f"{verb} {names[0]}"
    more = " …" if len(names) > shown else ""
    return f"{verb} {len(names)} files: {', '.join(names[:shown])}{more}"


def settle_rejection(uri: str, started: float, step: Callable[[], T]) -> T | Settled:
    """Run one file's ``step``; a permanent problem becomes the file's outcome, and only a
    ``TransientError`` escapes (for the task to retry)."""
    try:
        return step()
    except FileRejected as exc:
        return Settled(FileOutcome.rejected(uri, exc.reason, exc.detail, pages=exc.pages,
                                            seconds=time.perf_counter() - started))
    except TransientError:
        raise
    except Exception as exc:  # an unforeseen library error must cost one file, not the batch
        log.exception("unexpected error on %s", uri)
        return Settled(FileOutcome.rejected(uri, Reason.ERROR, f"{type(exc).__name__}: {exc}",
                                            seconds=time.perf_counter() - started))


class RetryableFilesError(TransientError):
    """Some files of a group hit transient faults; the others are done and remembered."""

    def __init__(self, failures: list[tuple[str, TransientError]]) -> None:
        self.failures = failures  # (source URI, fault)
        names = ", ".join(display_name(uri) for uri, _ in failures[:5])
        first = failures[0][1]
        super().__init__(f"{len(failures)} file(s) hit a transient fault ({names}): {first}")


def gave_up(uri: str, exc: TransientError) -> FileOutcome:
    """The outcome of a file still failing transiently after the last retry."""
    return FileOutcome.rejected(uri, exc.reason, f"gave up after retries: {exc}")


def each_file(items: Iterable[T], uri: Callable[[T], str], step: Callable[[T], U], *,
              memo: MutableMapping[str, U], give_up: bool,
              on_give_up: Callable[[str, TransientError], U]) -> list[U]:
    """``step`` every item not yet in ``memo`` (which keeps the results across retries).

    Items that hit a transient fault are collected and, once the rest are done, raised
    together as ``RetryableFilesError``, so a retry redoes only them — unless ``give_up``
    (the last attempt), when ``on_give_up`` turns each into its result.
    """
    items = list(items)
    failures: list[tuple[str, TransientError]] = []
    for item in items:
        key = uri(item)
        if key in memo:
            continue
        try:
            memo[key] = step(item)
        except TransientError as exc:
            failures.append((key, exc))
    if failures and not give_up:
        raise RetryableFilesError(failures)
    for key, exc in failures:
        memo[key] = on_give_up(key, exc)
    return [memo[uri(item)] for item in items]


def with_seconds(outcome: FileOutcome, seconds: float) -> FileOutcome:
    """``outcome`` with ``seconds`` more of the file's own time."""
    return outcome.model_copy(update={"seconds": round(outcome.seconds + seconds, 3)})
