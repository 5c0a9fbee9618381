"""S3 through s3fs against moto's S3 server over HTTP on 127.0.0.1."""

from __future__ import annotations

import pytest

from tasks.core.errors import ConfigError, FileRejected
from tasks.core.models import Reason
from tasks.core.sources import discover_files, filesystem, read_bytes
from tests.conftest import MIXED, upload_folder

pytestmark = pytest.mark.integration


def keys(files):
    return sorted(f.uri for f in files)


def test_listing_streams_a_prefix_recursively(s3_bucket):
    fs = filesystem("s3")
    for key in ["docs/a.txt", "docs/sub/b.pdf", "docs/.hidden.txt", "docs/.cache/c.txt",
                "docs2/not-this.txt", "other/x.txt"]:
        fs.pipe(f"{s3_bucket}/{key}", b"data")
    fs.invalidate_cache()
    files = list(discover_files([f"s3://{s3_bucket}/docs"]))
    assert keys(files) == [f"s3://{s3_bucket}/docs/a.txt", f"s3://{s3_bucket}/docs/sub/b.pdf"]
    assert all(f.etag and f.size == 4 and f.modified for f in files)
    assert keys(discover_files([f"s3://{s3_bucket}/docs/"], ["*.pdf"])) == [f"s3://{s3_bucket}/docs/sub/b.pdf"]
    assert len(list(discover_files([f"s3://{s3_bucket}"]))) == 4


def test_listing_is_paged_lazily(s3_bucket):
    fs = filesystem("s3")
    for i in range(1005):  # more than one ListObjectsV2 page of 1000
        fs.pipe(f"{s3_bucket}/many/f{i:04d}.txt", b"x")
    fs.invalidate_cache()
    iterator = discover_files([f"s3://{s3_bucket}/many/"])
    first = next(iterator)
    assert first.name == "f0000.txt"
    assert sum(1 for _ in iterator) == 1004


def test_single_key_and_explicit_list(s3_bucket):
    upload_folder(s3_bucket, "in", MIXED)
    one = list(discover_files([f"s3://{s3_bucket}/in/heat-pumps.txt"]))
    assert keys(one) == [f"s3://{s3_bucket}/in/heat-pumps.txt"]
    two = discover_files([f"s3://{s3_bucket}/in/heat-pumps.txt", f"s3://{s3_bucket}/in/empty.txt"])
    assert len(list(two)) == 2
    assert read_bytes(one[0]) == (MIXED / "heat-pumps.txt").read_bytes()
    assert read_bytes(one[0], limit=5) == b"How h"


def test_missing_bucket_and_vanished_key(s3_bucket):
    with pytest.raises(ConfigError):
        list(discover_files(["s3://no-such-bucket-here/x/"]))
    fs = filesystem("s3")
    fs.pipe(f"{s3_bucket}/gone.txt", b"soon gone")
    fs.invalidate_cache()
    [file] = discover_files([f"s3://{s3_bucket}/gone.txt"])
    fs.rm(f"{s3_bucket}/gone.txt")
    with pytest.raises(FileRejected) as caught:
        read_bytes(file)
    assert caught.value.reason is Reason.NOT_FOUND
