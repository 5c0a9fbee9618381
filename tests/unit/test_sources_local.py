"""Local discovery: recursion, hidden files, include globs, single files, dedupe."""

from __future__ import annotations

import pytest

from tasks.core.errors import ConfigError, FileRejected
from tasks.core.models import Reason
from tasks.core.sources import discover_files, matches_include, read_bytes


@pytest.fixture()
def tree(tmp_path):
    for rel in ["a.pdf", "b.txt", "sub/c.txt", "sub/deeper/d.pdf", ".hidden.txt", ".git/config",
                "sub/.cache/e.txt", "notes.md"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
    return tmp_path


def rel(tree, files):
    return sorted(f.path[len(str(tree)) + 1:] for f in files)


def test_recursive_without_hidden(tree):
    assert rel(tree, discover_files([str(tree)])) == [
        "a.pdf", "b.txt", "notes.md", "sub/c.txt", "sub/deeper/d.pdf"]


def test_include_globs_match_name_or_relative_path(tree):
    assert rel(tree, discover_files([str(tree)], ["*.pdf"])) == ["a.pdf", "sub/deeper/d.pdf"]
    assert rel(tree, discover_files([str(tree)], ["sub/*.txt"])) == ["sub/c.txt"]
    assert matches_include("x/y.txt", []) is True


def test_single_file_and_dedupe(tree):
    files = list(discover_files([str(tree / "b.txt"), str(tree), f"file://{tree}/b.txt"]))
    assert len(files) == 5 and len({f.uri for f in files}) == 5
    assert files[0].uri == (tree / "b.txt").as_uri() and files[0].size == len("b.txt")


def test_discovery_is_lazy(tree):
    iterator = discover_files([str(tree)])
    assert next(iterator).name == "a.pdf"


def test_missing_source_and_unknown_scheme(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        list(discover_files([str(tmp_path / "nope")]))
    with pytest.raises(ConfigError, match="scheme"):
        list(discover_files(["ftp://host/x"]))


def test_vanished_file_is_a_rejection(tree):
    file = next(discover_files([str(tree / "a.pdf")]))
    (tree / "a.pdf").unlink()
    with pytest.raises(FileRejected) as caught:
        read_bytes(file)
    assert caught.value.reason is Reason.NOT_FOUND


def test_file_uris_are_decoded(tmp_path):
    odd = tmp_path / "notes (2) é.txt"
    odd.write_text("x")
    [file] = discover_files([odd.as_uri()])
    assert file.path == str(odd) and file.uri == odd.as_uri()
