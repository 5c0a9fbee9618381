"""The ``ingest`` command line: JSON shape, exit codes, one-line errors, page-cited search."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from apps.cli import app
from tests.conftest import MIXED, SAMPLES, close_stores, get_store

pytestmark = pytest.mark.flow
runner = CliRunner()


@pytest.mark.store
def test_run_json_then_search(ingest_env):
    result = runner.invoke(app, ["run", str(MIXED), "--collection", "cli", "--include", "*.pdf", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) >= {"run_id", "collection", "files", "totals"} and report["prune"] is None
    assert report["collection"] == "cli" and report["totals"]["files"] == 6
    assert set(report["totals"]["seconds_by_stage"]) >= {"prepare", "read", "chunk", "embed", "store"}
    assert report["embed_runtime"] == "fp32" and report["totals"]["chunks_embedded"] > 0
    assert report["embed_choice"] == "INGEST_EMBED_PRECISION=fp32"
    row = next(f for f in report["files"] if f["source"].endswith("/alpine-lakes.pdf"))
    assert list(row) == ["file", "status", "reason", "pages", "ocr_pages", "chunks", "seconds", "detail", "source"]
    assert row["file"] == "alpine-lakes.pdf"
    assert (row["status"], row["pages"]) == ("indexed", 4)

    found = runner.invoke(app, ["search", "fishing licence and barbless hooks", "--collection", "cli",
                                "-k", "2", "--json"])
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert hits[0]["file"] == "alpine-lakes.pdf" and hits[0]["page_start"] <= 3 <= hits[0]["page_end"]

    table = runner.invoke(app, ["search", "fishing licence", "--collection", "cli"])
    assert "alpine-lakes.pdf" in table.stdout and "p. 3" in table.stdout or "pp. 3" in table.stdout

    for mode in ("dense", "sparse"):
        one = runner.invoke(app, ["search", "barbless hooks", "--collection", "cli", "--mode", mode,
                                  "-k", "1", "--json"])
        assert one.exit_code == 0, one.output
        assert json.loads(one.stdout)[0]["file"] == "alpine-lakes.pdf"
    bad = runner.invoke(app, ["search", "hooks", "--collection", "cli", "--mode", "fuzzy"])
    assert bad.exit_code == 2


@pytest.mark.parametrize("args,code,message", [
    (["run", str(MIXED), "--chunk-tokens", "4"], 2, "chunk_tokens"),
    (["run", str(MIXED), "--chunk-tokens", "100", "--chunk-overlap", "80"], 2, "half"),
    (["run", str(MIXED), "--collection", "bad name"], 2, "collection"),
    (["run", "/definitely/not/here"], 1, "source not found"),
    (["run", str(MIXED), "--chunk-tokens", "1000"], 1, "exceeds the model's limit"),
])
def test_bad_runs_exit_non_zero_with_one_line(ingest_env, args, code, message):
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


@pytest.mark.store
def test_collection_of_another_size_is_refused_before_writing(ingest_env):
    from tasks.core.settings import IngestSettings

    store = get_store(IngestSettings().store_location())
    store.ensure_collection("small", 8)
    result = runner.invoke(app, ["run", str(MIXED), "--collection", "small"])
    assert result.exit_code == 1 and "8-d" in result.stderr
    assert store.count("small") == 0


@pytest.mark.once  # the process plumbing, not the store: first pass only
def test_console_script_end_to_end(cli_env, tmp_path):
    """The installed ``ingest`` script in a fresh process, as a user runs it."""
    script = Path(sys.executable).parent / "ingest"
    env = {**cli_env, "INGEST_CACHE_DIR": str(tmp_path / "cache")}  # nothing kept yet
    run = subprocess.run([str(script), "run", str(SAMPLES), "--json"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    statuses = {f["source"].rsplit("/", 1)[-1]: f["status"] for f in report["files"]}
    assert statuses["scanned-receipt.pdf"] == "failed"
    assert sum(s == "indexed" for s in statuses.values()) == 4

    def search() -> tuple[list, set[str]]:
        found = subprocess.run([sys.executable, "-X", "importtime", str(script), "search",
                                "why are glacial lakes turquoise", "-k", "1", "--json"],
                               env=env, capture_output=True, text=True, timeout=120)
        assert found.returncode == 0, found.stderr
        imported = {line.rsplit("|", 1)[-1].strip() for line in found.stderr.splitlines()
                    if line.startswith("import time:")}
        assert imported
        return json.loads(found.stdout), imported

    # The run kept a query encoder: the first search already imports no model stack.
    [hit], imported = search()
    assert hit["file"] == "alpine-lakes-field-guide.pdf" and hit["page_start"] <= 2 <= hit["page_end"]
    assert not imported & {"torch", "transformers", "sentence_transformers"}
    again, imported = search()
    assert again == [hit] and not imported & {"torch", "transformers", "sentence_transformers"}


@pytest.mark.store
def test_prune_and_overwrite_from_the_command_line(ingest_env, tmp_path):
    import shutil

    folder = tmp_path / "docs"
    shutil.copytree(SAMPLES, folder)
    assert runner.invoke(app, ["run", str(folder)]).exit_code == 0
    (folder / "heat-pumps.txt").unlink()
    (folder / "sourdough-handbook.pdf").unlink()
    (folder / "notes-torrefaction-cp1252.txt").unlink()
    refused = runner.invoke(app, ["run", str(folder), "--prune"])
    assert refused.exit_code == 0 and "prune refused" in refused.stderr
    pruned = runner.invoke(app, ["run", str(folder), "--prune", "--prune-max-fraction", "0.8", "--json"])
    assert pruned.exit_code == 0, pruned.output
    report = json.loads(pruned.stdout)
    assert report["totals"]["deleted"] == 3 and report["prune"]["deleted"] == 3
    assert {f["status"] for f in report["files"]} == {"unchanged", "failed", "deleted"}


@pytest.mark.store
def test_overwrite_recreates_a_collection_of_another_size(ingest_env):
    from tasks.core.settings import IngestSettings

    store = get_store(IngestSettings().store_location())
    store.ensure_collection("resized", 8)
    refused = runner.invoke(app, ["run", str(SAMPLES), "--collection", "resized"])
    assert refused.exit_code == 1 and "--overwrite" in refused.stderr
    result = runner.invoke(app, ["run", str(SAMPLES), "--collection", "resized", "--overwrite", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["totals"]["indexed"] == 4


@pytest.mark.store
def test_export_and_migrate_from_the_command_line(ingest_env, store_backend):
    ran = runner.invoke(app, ["run", str(SAMPLES), "--collection", "moving", "--json"])
    assert ran.exit_code == 0, ran.output
    chunks = json.loads(ran.stdout)["totals"]["chunks"]
    exported = runner.invoke(app, ["export", "--collection", "moving"])
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(lines) == chunks and all(set(r) == {"id", "payload"} for r in lines)
    with_vectors = runner.invoke(app, ["export", "--collection", "moving", "--vectors"])
    first = json.loads(with_vectors.stdout.splitlines()[0])
    assert len(first["vector"]) == 384 and len(first["sparse"]["bm25"]["indices"]) > 0
    assert len(first["sparse"]["grams"]["indices"]) > 0

    close_stores()  # the migration opens both embedded stores itself
    other = "qdrant-local" if store_backend == "edge" else "edge"
    moved = runner.invoke(app, ["migrate", "--from", store_backend, "--to", other, "--collection", "moving"])
    assert moved.exit_code == 0, moved.output
    assert f"copied {chunks} points" in moved.stdout
    import os

    os.environ["INGEST_STORE"] = other  # restored by the autouse env fixture
    copied = runner.invoke(app, ["export", "--collection", "moving"])
    assert sorted(l["id"] for l in map(json.loads, copied.stdout.splitlines())) == sorted(r["id"] for r in lines)
    found = runner.invoke(app, ["search", "glacial lakes turquoise", "--collection", "moving", "--json"])
    assert json.loads(found.stdout)[0]["file"] == "alpine-lakes-field-guide.pdf"
    keywords = runner.invoke(app, ["search", "glacial turquoise", "--collection", "moving",
                                   "--mode", "sparse", "--json"])  # the BM25 vectors moved too
    assert json.loads(keywords.stdout)[0]["file"] == "alpine-lakes-field-guide.pdf"
    bad = runner.invoke(app, ["migrate", "--from", "edge", "--to", "edge"])
    assert bad.exit_code == 2
    missing = runner.invoke(app, ["export", "--collection", "nope"])
    assert missing.exit_code == 1 and "does not exist" in missing.stderr


def test_a_symlink_loop_as_the_source_is_one_line(ingest_env, tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    result = runner.invoke(app, ["run", str(tmp_path / "a")])
    assert result.exit_code == 1, result.output
    assert "cannot be resolved" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_links_are_followed_only_inside_the_source_folder(ingest_env, tmp_path):
    folder, outside = tmp_path / "landing", tmp_path / "private"
    folder.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("the private key is under the doormat")
    (folder / "notes.txt").write_text("a note about heat pumps and their efficiency")
    (folder / "alias.txt").symlink_to(folder / "notes.txt")            # inside: followed
    (folder / "leak.txt").symlink_to(outside / "secret.txt")           # outside: not followed
    (folder / "private").symlink_to(outside, target_is_directory=True)  # a folder outside
    (folder / "gone.txt").symlink_to(folder / "deleted.txt")           # broken
    result = runner.invoke(app, ["run", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["file"]: (r["status"], r["reason"]) for r in json.loads(result.stdout)["files"]}
    assert rows == {"notes.txt": ("indexed", "ok"), "alias.txt": ("indexed", "ok"),
                    "leak.txt": ("skipped", "outside_source"),
                    "private": ("skipped", "outside_source"),
                    "gone.txt": ("failed", "not_found")}
    hits = runner.invoke(app, ["search", "where is the private key", "--json"])
    assert "doormat" not in hits.stdout
