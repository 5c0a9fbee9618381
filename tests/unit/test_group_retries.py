"""A group of files across retries: finished files are kept, only transient ones are redone."""

from __future__ import annotations

import pytest

from tasks.core.errors import SourceUnavailableError, StoreUnavailableError
from tasks.core.models import FileOutcome, Reason, SourceFile, Status
from tasks.core.process import PreparedFile, RetryableFilesError, process_files


def source(name: str) -> SourceFile:
    return SourceFile(uri=f"s3://b/{name}", protocol="s3", path=f"b/{name}", name=name)


class ScriptedProcessor:
    """Stands in for FileProcessor: fails the named files transiently a number of times."""

    def __init__(self, flaky: dict[str, int], lookup_failures: int = 0) -> None:
        self.flaky = dict(flaky)
        self.lookup_failures = lookup_failures
        self.calls: list[str] = []
        self.lookups: list[list[str]] = []

    def known_files(self, files):
        self.lookups.append([f.name for f in files])
        if self.lookup_failures > 0:
            self.lookup_failures -= 1
            raise StoreUnavailableError("lookup timed out")
        return {}

    def prepare_group(self, files, known):
        prepared, failures = {}, []
        for file in files:
            self.calls.append(file.name)
            if self.flaky.get(file.name, 0) > 0 and not file.name.startswith("store"):
                self.flaky[file.name] -= 1
                failures.append((file.uri, SourceUnavailableError(f"{file.name} blipped")))
                continue
            prepared[file.uri] = PreparedFile(FileOutcome(source=file.uri, status=Status.INDEXED, chunks=1))
        return prepared, failures

    def commit(self, prepared: PreparedFile) -> FileOutcome:
        name = prepared.outcome.source.rsplit("/", 1)[-1]
        if self.flaky.get(name, 0) > 0:
            self.flaky[name] -= 1
            raise StoreUnavailableError(f"{name} blipped")
        return prepared.outcome


def test_retry_redoes_only_the_failed_files():
    files = [source("a.txt"), source("b.txt"), source("c.txt")]
    processor = ScriptedProcessor({"b.txt": 1})
    done: dict[str, FileOutcome] = {}
    with pytest.raises(RetryableFilesError) as caught:
        process_files(processor, files, done=done, give_up=False)
    assert [uri.rsplit("/", 1)[-1] for uri, _ in caught.value.failures] == ["b.txt"]
    assert processor.calls == ["a.txt", "b.txt", "c.txt"]
    outcomes = process_files(processor, files, done=done, give_up=False)
    assert processor.calls[3:] == ["b.txt"]
    assert processor.lookups == [["a.txt", "b.txt", "c.txt"], ["b.txt"]]  # one lookup per attempt
    assert [o.status for o in outcomes] == [Status.INDEXED] * 3


def test_last_attempt_turns_transient_faults_into_outcomes():
    files = [source("a.txt"), source("store-b.txt"), source("c.txt")]
    outcomes = process_files(ScriptedProcessor({"a.txt": 9, "store-b.txt": 9}), files, done={},
                             give_up=True)
    assert [(o.status, o.reason) for o in outcomes] == [
        (Status.FAILED, Reason.SOURCE_UNAVAILABLE), (Status.FAILED, Reason.STORE_UNAVAILABLE),
        (Status.INDEXED, Reason.OK)]
    assert "gave up after retries" in outcomes[0].detail


def test_a_failed_lookup_retries_the_whole_group_then_gives_up():
    files = [source("a.txt"), source("b.txt")]
    processor = ScriptedProcessor({}, lookup_failures=5)
    with pytest.raises(RetryableFilesError) as caught:
        process_files(processor, files, done={}, give_up=False)
    assert len(caught.value.failures) == 2 and processor.calls == []
    outcomes = process_files(processor, files, done={}, give_up=True)
    assert {(o.status, o.reason) for o in outcomes} == {(Status.FAILED, Reason.STORE_UNAVAILABLE)}
