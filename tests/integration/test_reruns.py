"""Safe re-runs with the vector store as the only record (issue: idempotent, incremental,
overwrite and prune). Every test asserts on exact point IDs and payloads."""

from __future__ import annotations

import os
import shutil
import threading

import pytest

from tasks.core.ids import point_id
from tasks.core.models import Status
from tasks.core.prune import prune_missing
from tasks.core.stages import read as read_module
from tests.conftest import (
    MIXED,
    SAMPLES,
    assert_same_store,
    close_stores,
    get_store,
    make_config,
    run_all,
    snapshot,
    upload_folder,
)

pytestmark = [pytest.mark.integration, pytest.mark.store]

LONG = "\n\n".join(
    f"Section {i}. Glaciers carve deep basins into the valley floor as they advance, and "
    f"meltwater fills the hollow once the ice retreats; rock flour colours lake {i} turquoise."
    for i in range(120))


@pytest.fixture()
def folder(tmp_path):
    path = tmp_path / "docs"
    shutil.copytree(SAMPLES, path)
    return path


@pytest.fixture()
def reference(tmp_path):
    """Builds the store one uninterrupted run over ``folder`` produces, for comparison."""
    def build(folder, **params):
        close_stores()
        config = make_config(tmp_path / f"reference-{len(os.listdir(tmp_path))}", **params)
        run_all(config, [str(folder)])
        expected = snapshot(config)
        close_stores()
        return expected
    return build


@pytest.fixture()
def reads(monkeypatch):
    """Counts file downloads by name."""
    counted: dict[str, int] = {}
    original = read_module.read_bytes

    def counting(file, **kwargs):
        counted[file.name] = counted.get(file.name, 0) + 1
        return original(file, **kwargs)

    monkeypatch.setattr(read_module, "read_bytes", counting)
    return counted


def statuses(outcomes):
    return {name: o.status for name, o in outcomes.items()}


def ids_for(outcomes, name):
    uri = outcomes[name].source
    return {point_id(uri, i) for i in range(outcomes[name].chunks)}


def test_unchanged_files_are_skipped_without_download(store_path, folder, reads):
    config = make_config(store_path)
    first = run_all(config, [str(folder)])
    before = snapshot(config)
    reads.clear()
    second = run_all(config, [str(folder)])
    assert set(statuses(second).values()) == {Status.UNCHANGED, Status.FAILED}  # + scanned receipt
    assert reads == {"scanned-receipt.pdf": 1}  # only the file that is not indexed is read again
    assert sum(o.chunks for o in second.values() if o.status is Status.INDEXED) == 0
    assert second["heat-pumps.txt"].chunks == first["heat-pumps.txt"].chunks
    # Nothing rewritten: even ingested_at is the same.
    stamps = {p.id: p.payload["ingested_at"] for p in get_store(config.store).iter_points("docs")}
    assert snapshot(config) == before
    run_all(config, [str(folder)])
    assert {p.id: p.payload["ingested_at"] for p in get_store(config.store).iter_points("docs")} == stamps


def test_touched_file_is_hashed_once_then_skipped_by_signature(store_path, folder, reads):
    config = make_config(store_path)
    run_all(config, [str(folder)])
    os.utime(folder / "heat-pumps.txt", ns=(1_700_000_000_000_000_000,) * 2)
    reads.clear()
    assert statuses(run_all(config, [str(folder)]))["heat-pumps.txt"] is Status.UNCHANGED
    assert reads.get("heat-pumps.txt") == 1
    reads.clear()
    assert statuses(run_all(config, [str(folder)]))["heat-pumps.txt"] is Status.UNCHANGED
    assert "heat-pumps.txt" not in reads


def test_changed_and_shrunk_files_are_replaced_exactly(store_path, folder, reference):
    (folder / "long.txt").write_text(LONG)
    config = make_config(store_path)
    first = run_all(config, [str(folder)])
    assert first["long.txt"].chunks >= 30
    (folder / "long.txt").write_text(LONG[: len(LONG) // 4])
    (folder / "heat-pumps.txt").write_text("Heat pumps move heat from outside to inside.\n")
    second = run_all(config, [str(folder)])
    assert statuses(second)["long.txt"] is Status.UPDATED
    assert statuses(second)["heat-pumps.txt"] is Status.UPDATED
    assert second["long.txt"].chunks < first["long.txt"].chunks
    assert {i for i, (p, _) in snapshot(config).items() if p["file_name"] == "long.txt"} == ids_for(second, "long.txt")
    close_stores()
    expected = reference(folder)
    assert_same_store(snapshot(make_config(store_path)), expected)


def test_identical_content_under_two_names_is_two_files(store_path, folder):
    shutil.copy(folder / "heat-pumps.txt", folder / "heat-pumps-copy.txt")
    config = make_config(store_path)
    outcomes = run_all(config, [str(folder)])
    a, b = ids_for(outcomes, "heat-pumps.txt"), ids_for(outcomes, "heat-pumps-copy.txt")
    assert a and b and not a & b
    texts = {p["file_name"]: p["text"] for p, _ in snapshot(config).values() if p["chunk_index"] == 0}
    assert texts["heat-pumps.txt"] == texts["heat-pumps-copy.txt"]


def test_config_change_reembeds(store_path, folder, reference):
    config = make_config(store_path)
    run_all(config, [str(folder)])
    smaller = make_config(store_path, chunk_tokens=48, chunk_overlap=8)
    outcomes = run_all(smaller, [str(folder)])
    assert {s for n, s in statuses(outcomes).items() if n != "scanned-receipt.pdf"} == {Status.UPDATED}
    assert outcomes["heat-pumps.txt"].chunks > 2
    close_stores()
    expected = reference(folder, chunk_tokens=48, chunk_overlap=8)
    assert_same_store(snapshot(make_config(store_path)), expected)


def test_overwrite_reembeds_everything(store_path, folder):
    config = make_config(store_path)
    run_all(config, [str(folder)])
    before = snapshot(config)
    outcomes = run_all(make_config(store_path, overwrite=True), [str(folder)])
    indexed = {n: o for n, o in outcomes.items() if n != "scanned-receipt.pdf"}
    assert {o.status for o in indexed.values()} == {Status.UPDATED}
    assert all(o.chunks > 0 for o in indexed.values())
    assert_same_store(snapshot(config), before)  # the same points, re-embedded in place


def test_deleted_and_renamed_files_are_pruned(store_path, folder, reference):
    for extra in ("a", "b", "c", "d"):
        (folder / f"extra-{extra}.txt").write_text(f"Extra note {extra} about alpine lakes.\n")
    config = make_config(store_path)
    run_all(config, [str(folder)])
    (folder / "heat-pumps.txt").rename(folder / "heat-pumps-renamed.txt")
    (folder / "extra-a.txt").unlink()
    outcomes = run_all(config, [str(folder)])
    assert statuses(outcomes)["heat-pumps-renamed.txt"] is Status.INDEXED
    listed = {o.source for o in outcomes.values()}
    report, deleted = prune_missing(get_store(config.store), "docs", listed=listed,
                                    sources=[str(folder)], include=[], max_fraction=0.5, force=False)
    assert report.deleted == 2 and report.refused is None
    assert sorted(o.source.rsplit("/", 1)[-1] for o in deleted) == ["extra-a.txt", "heat-pumps.txt"]
    assert {o.status for o in deleted} == {Status.DELETED}
    close_stores()
    expected = reference(folder)
    assert_same_store(snapshot(make_config(store_path)), expected)


def test_prune_guard_refuses_then_force_deletes(store_path, folder):
    config = make_config(store_path)
    run_all(config, [str(folder)])
    store = get_store(config.store)
    before = snapshot(config)
    keep = {(folder / "heat-pumps.txt").as_uri()}
    report, deleted = prune_missing(store, "docs", listed=keep, sources=[str(folder)], include=[],
                                    max_fraction=0.5, force=False)
    assert report.refused and "3 of 4" in report.refused and deleted == []
    assert snapshot(config) == before
    report, deleted = prune_missing(store, "docs", listed=keep, sources=[str(folder)], include=[],
                                    max_fraction=0.5, force=True)
    assert report.deleted == 3 and store.indexed_sources("docs") == keep


def test_prune_only_touches_what_the_listing_covers(store_path, folder, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("Another folder's file stays indexed.\n")
    config = make_config(store_path)
    run_all(config, [str(folder), str(other)])
    store = get_store(config.store)
    pdfs = {o.source for o in run_all(config, [str(folder)], include=["*.pdf"]).values()}
    report, deleted = prune_missing(store, "docs", listed=pdfs, sources=[str(folder)],
                                    include=["*.pdf"], max_fraction=1.0, force=False)
    assert report.deleted == 0 and deleted == []  # .txt files and the other folder are not covered
    assert len(store.indexed_sources("docs")) == 5


def test_s3_reruns_use_etag_and_prune(store_path, s3_bucket, reads):
    upload_folder(s3_bucket, "in", MIXED)
    config = make_config(store_path)
    source = f"s3://{s3_bucket}/in/"
    first = run_all(config, [source])
    reads.clear()
    second = run_all(config, [source])
    indexed = [n for n, o in first.items() if o.status is Status.INDEXED]
    assert all(second[n].status is Status.UNCHANGED for n in indexed)
    assert not set(reads) & set(indexed)  # ETag and size from the listing sufficed
    from tasks.core.sources import filesystem

    filesystem("s3").rm(f"{s3_bucket}/in/heat-pumps.txt")
    filesystem("s3").invalidate_cache()
    listed = {o.source for o in run_all(config, [source]).values()}
    report, deleted = prune_missing(get_store(config.store), "docs", listed=listed, sources=[source],
                                    include=[], max_fraction=0.5, force=False)
    assert [o.source for o in deleted] == [f"{source}heat-pumps.txt"]


def test_concurrent_runs_end_like_one_run(store_path, folder, reference):
    config = make_config(store_path)
    errors = []

    def one_run():
        try:
            run_all(config, [str(folder)], group=2)
        except Exception as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    close_stores()
    expected = reference(folder)
    assert_same_store(snapshot(make_config(store_path)), expected)
