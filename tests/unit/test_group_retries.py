"""A group of files across retries: finished files are kept, only transient ones are redone.
(Pure logic: stand-in reads and writes.)"""

from __future__ import annotations

import itertools

import pytest

from tasks.core.errors import SourceUnavailableError, StoreUnavailableError
from tasks.core.models import FileOutcome, Reason, SourceFile, Status
from tasks.core.stages.group import RetryableFilesError, Settled, each_file, gave_up
from tasks.core.stages.read import read
from tests.conftest import make_config


def source(name: str) -> SourceFile:
    return SourceFile(uri=f"s3://b/{name}", protocol="s3", path=f"b/{name}", name=name)


class Flaky:
    """A step that fails the named items transiently a number of times, and records calls."""

    def __init__(self, flaky: dict[str, int], error=SourceUnavailableError) -> None:
        self.flaky, self.error, self.calls = dict(flaky), error, []

    def __call__(self, file: SourceFile) -> FileOutcome:
        self.calls.append(file.name)
        if self.flaky.get(file.name, 0) > 0:
            self.flaky[file.name] -= 1
            raise self.error(f"{file.name} blipped")
        return FileOutcome(source=file.uri, status=Status.INDEXED, chunks=1)


def test_retry_redoes_only_the_failed_files():
    files = [source("a.txt"), source("b.txt"), source("c.txt")]
    step, memo = Flaky({"b.txt": 1}), {}
    with pytest.raises(RetryableFilesError) as caught:
        each_file(files, lambda f: f.uri, step, memo=memo, give_up=False, on_give_up=gave_up)
    assert [uri.rsplit("/", 1)[-1] for uri, _ in caught.value.failures] == ["b.txt"]
    assert step.calls == ["a.txt", "b.txt", "c.txt"]
    outcomes = each_file(files, lambda f: f.uri, step, memo=memo, give_up=False, on_give_up=gave_up)
    assert step.calls[3:] == ["b.txt"]
    assert [o.status for o in outcomes] == [Status.INDEXED] * 3


def test_last_attempt_turns_transient_faults_into_outcomes():
    files = [source("a.txt"), source("b.txt"), source("c.txt")]
    outcomes = each_file(files, lambda f: f.uri, Flaky({"a.txt": 9}), memo={}, give_up=True,
                         on_give_up=gave_up)
    assert [(o.status, o.reason) for o in outcomes] == [
        (Status.FAILED, Reason.SOURCE_UNAVAILABLE), (Status.INDEXED, Reason.OK), (Status.INDEXED, Reason.OK)]
    assert "gave up after retries" in outcomes[0].detail
    store_down = each_file(files[:1], lambda f: f.uri, Flaky({"a.txt": 9}, StoreUnavailableError),
                           memo={}, give_up=True, on_give_up=gave_up)
    assert store_down[0].reason is Reason.STORE_UNAVAILABLE


def test_a_failed_head_lookup_retries_the_whole_read_then_gives_up(tmp_path):
    files = [source("a.txt"), source("b.txt")]
    config = make_config(tmp_path / "store").with_runtime("fp32")
    lookups: list[list[str]] = []

    def heads(pending):
        lookups.append([f.name for f in pending])
        raise StoreUnavailableError("lookup timed out")

    memo: dict = {}
    with pytest.raises(RetryableFilesError) as caught:
        read(files, config, heads=heads, parse_pdf=None, memo=memo, give_up=False)
    assert len(caught.value.failures) == 2 and memo == {}
    group = read(files, config, heads=heads, parse_pdf=None, memo=memo, give_up=True)
    assert lookups == [["a.txt", "b.txt"]] * 2 and group.files == ()
    assert {(s.outcome.status, s.outcome.reason) for s in group.settled} == {
        (Status.FAILED, Reason.STORE_UNAVAILABLE)}
    assert all(isinstance(s, Settled) for s in group.settled)


def test_groups_are_bounded_in_files_and_in_bytes():
    from tasks.core.models import SourceFile
    from tasks.core.stages.group import group_files

    def listing(*sizes):
        return (SourceFile(uri=f"file:///f{i}", protocol="file", path=f"/f{i}", name=f"f{i}",
                           size=size) for i, size in enumerate(sizes))

    def cut(*sizes, max_files=3, max_bytes=100, first_files=None):
        return [[f.size for f in g] for g in group_files(listing(*sizes), max_files=max_files,
                                                          max_bytes=max_bytes, first_files=first_files)]

    assert cut(10, 10, 10, 10, 10) == [[10, 10, 10], [10, 10]]          # by count
    assert cut(60, 30, 20, 5) == [[60, 30], [20, 5]]                     # by bytes
    assert cut(10, 250, 10) == [[10], [250], [10]]                       # a large file goes alone
    assert cut(None, None, None, None) == [[None, None, None], [None]]   # unknown sizes count 0
    assert cut() == []
    # A small first group, doubling up to max_files: the model starts while the rest is read.
    assert cut(*[1] * 12, max_files=4, first_files=1) == [[1], [1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1]]
    assert cut(*[1] * 3, max_files=4, first_files=8) == [[1, 1, 1]]     # never above max_files
    assert cut(60, 30, 20, 5, 5, max_files=4, first_files=2) == [[60, 30], [20, 5, 5]]  # bytes too
    endless = (SourceFile(uri=f"file:///{i}", protocol="file", path=f"/{i}", name=str(i), size=1)
               for i in itertools.count())
    assert [f.name for f in next(group_files(endless, max_files=2, max_bytes=100))] == ["0", "1"]
