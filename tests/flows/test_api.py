"""The HTTP batch upload API through FastAPI's test client, and once through real uvicorn."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from apps.api import create_app
from tests.conftest import MIXED, free_port

pytestmark = pytest.mark.flow
KEY = "k3y-not-for-logs-7f1c"


def upload(*names_and_files):
    return [("files", (name, Path(path).read_bytes(), "application/octet-stream"))
            for name, path in names_and_files]


FOUR = [("guide.pdf", MIXED / "alpine-lakes.pdf"), ("heat-pumps.txt", MIXED / "heat-pumps.txt"),
        ("locked.pdf", MIXED / "encrypted.pdf"), ("photo.pdf", MIXED / "photo-named.pdf")]


@pytest.fixture()
def landing(ingest_env, tmp_path, monkeypatch):
    folder = tmp_path / "landing"
    monkeypatch.setenv("INGEST_LANDING", str(folder))
    return folder


@pytest.fixture()
def client(landing):
    return TestClient(create_app())


def by_file(response):
    return {r["file"]: (r["status"], r["reason"]) for r in response.json()["results"]}


def test_four_files_four_results_then_unchanged_then_overwrite(client):
    first = client.post("/batch", files=upload(*FOUR))
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "done" and first.json()["run_id"]
    assert by_file(first) == {"guide.pdf": ("indexed", "ok"), "heat-pumps.txt": ("indexed", "ok"),
                              "locked.pdf": ("failed", "encrypted"),
                              "photo.pdf": ("skipped", "unsupported_type")}
    row = next(r for r in first.json()["results"] if r["file"] == "guide.pdf")
    assert row["pages"] == 4 and row["chunks"] == 4 and list(row) == [
        "file", "status", "reason", "pages", "chunks", "seconds", "detail", "source", "stored_as"]

    again = client.post("/batch", files=upload(*FOUR[:2]))
    assert by_file(again) == {"guide.pdf": ("unchanged", "unchanged"),
                              "heat-pumps.txt": ("unchanged", "unchanged")}
    forced = client.post("/batch?overwrite=true", files=upload(*FOUR[:2]))
    assert {s for s, _ in by_file(forced).values()} == {"updated"}

    hits = client.get("/search", params={"q": "why are glacial lakes turquoise", "k": 1}).json()["hits"]
    assert hits[0]["file"] == "guide.pdf" and hits[0]["page_start"] <= 2 <= hits[0]["page_end"]
    assert client.get("/healthz").json() == {"status": "ok"}


def test_same_name_twice_in_one_request_is_kept_apart(client, landing):
    response = client.post("/batch", files=upload(("notes.txt", MIXED / "heat-pumps.txt"),
                                                  ("notes.txt", MIXED / "cafe-cp1252.txt")))
    results = response.json()["results"]
    assert [(r["file"], r["stored_as"], r["status"]) for r in results] == [
        ("notes.txt", "notes (2).txt", "indexed"), ("notes.txt", "notes.txt", "indexed")]
    assert sorted(p.name for p in landing.iterdir()) == ["notes (2).txt", "notes.txt"]
    assert (landing / "notes (2).txt").read_bytes() == (MIXED / "cafe-cp1252.txt").read_bytes()


def raw_multipart(filename: bytes) -> tuple[bytes, dict]:
    """A multipart body with the file name's bytes as sent (clients would escape them)."""
    body = (b"--B\r\nContent-Disposition: form-data; name=\"files\"; filename=\"" + filename
            + b"\"\r\nContent-Type: text/plain\r\n\r\nsome text\r\n--B--\r\n")
    return body, {"Content-Type": "multipart/form-data; boundary=B"}


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/passwd", "dir/x.txt", "..", ".hidden.txt",
                                  "back\\slash.txt"])
def test_dangerous_names_are_refused_and_nothing_lands(client, landing, name):
    response = client.post("/batch", files=[("files", (name, b"text", "text/plain"))])
    assert response.status_code == 400, response.text
    assert not landing.exists() or not any(landing.iterdir())


@pytest.mark.parametrize("name", [b"a\x00b.txt", b"bad\x07bell.txt", b"tab\tname.txt",
                                  b"../../etc/cron.d/x"])
def test_raw_hostile_names_are_refused(client, landing, name):
    body, headers = raw_multipart(name)
    response = client.post("/batch", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert not landing.exists() or not any(landing.iterdir())


def test_limits_and_missing_files(landing, monkeypatch):
    monkeypatch.setenv("INGEST_API_MAX_FILES", "2")
    monkeypatch.setenv("INGEST_API_MAX_FILE_MB", "0.002")  # ~2 KB: the guide PDF is larger
    client = TestClient(create_app())
    too_many = client.post("/batch", files=upload(*FOUR[1:]))
    assert too_many.status_code == 413 and "limit of 2" in too_many.json()["detail"]
    too_big = client.post("/batch", files=upload(FOUR[1], FOUR[0]))
    assert too_big.status_code == 413 and "guide.pdf" in too_big.json()["detail"]
    assert not landing.exists() or not any(landing.iterdir())  # not even the small one
    assert client.post("/batch").status_code == 422


def test_api_key_is_required_and_never_echoed(landing, monkeypatch):
    monkeypatch.setenv("INGEST_API_KEY", KEY)
    client = TestClient(create_app())
    assert client.post("/batch", files=upload(FOUR[1])).status_code == 401
    wrong = client.post("/batch", files=upload(FOUR[1]), headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401 and KEY not in wrong.text
    assert client.get("/search", params={"q": "x"}).status_code == 401
    ok = client.post("/batch", files=upload(FOUR[1]), headers={"X-API-Key": KEY})
    assert ok.status_code == 200 and KEY not in ok.text
    assert client.get("/healthz").status_code == 200  # health needs no key


def test_wait_false_answers_202_then_the_run_reads_back(client):
    accepted = client.post("/batch?wait=false", files=upload(*FOUR))
    assert accepted.status_code == 202, accepted.text
    run_id = accepted.json()["run_id"]
    deadline = time.monotonic() + 120
    while True:
        state = client.get(f"/runs/{run_id}").json()
        if state["state"] in ("COMPLETED", "FAILED", "CRASHED") and state["results"] is not None:
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    assert state["state"] == "COMPLETED"
    assert {r["file"]: r["status"] for r in state["results"]} == {
        "guide.pdf": "indexed", "heat-pumps.txt": "indexed", "locked.pdf": "failed", "photo.pdf": "skipped"}
    assert client.get("/runs/00000000-0000-0000-0000-000000000000").status_code == 404


@pytest.mark.once  # the process plumbing, not the store: first pass only
def test_through_a_real_uvicorn_server(cli_env, tmp_path):
    port = free_port()
    env = {**cli_env, "INGEST_LANDING": str(tmp_path / "landing"), "INGEST_API_KEY": KEY}
    server = subprocess.Popen([str(Path(sys.executable).parent / "ingest"), "api", "--port", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "API did not start"
            time.sleep(0.3)
        response = httpx.post(f"{base}/batch", files=upload(*FOUR), headers={"X-API-Key": KEY},
                              timeout=180)
        assert response.status_code == 200, response.text
        assert by_file(response)["guide.pdf"] == ("indexed", "ok")
        assert httpx.post(f"{base}/batch", files=upload(FOUR[0]), timeout=30).status_code == 401
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert KEY not in output  # not in the server's logs either


def test_landing_on_s3(ingest_env, s3_bucket, monkeypatch):
    from tasks.core.sources import filesystem

    monkeypatch.setenv("INGEST_LANDING", f"s3://{s3_bucket}/landing")
    client = TestClient(create_app())
    response = client.post("/batch", files=upload(*FOUR[:2]))
    assert by_file(response) == {"guide.pdf": ("indexed", "ok"), "heat-pumps.txt": ("indexed", "ok")}
    fs = filesystem("s3")
    fs.invalidate_cache()
    assert sorted(fs.ls(f"{s3_bucket}/landing")) == [f"{s3_bucket}/landing/guide.pdf",
                                                     f"{s3_bucket}/landing/heat-pumps.txt"]
    again = client.post("/batch", files=upload(*FOUR[:2]))
    assert {s for s, _ in by_file(again).values()} == {"unchanged"}
    sources = {r["file"]: r for r in response.json()["results"]}
    assert sources["guide.pdf"]["pages"] == 4
