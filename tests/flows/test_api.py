"""The HTTP batch upload API through FastAPI's test client, and once through real uvicorn."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from apps.api import create_app
from tests.conftest import MIXED, free_port, wait_until

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


@contextlib.contextmanager
def started(app):
    """A test client whose app went through its start-up (lifespan) and reports ready."""
    with TestClient(app) as client:
        wait_until(lambda: client.get("/healthz").json()["status"] != "starting", timeout=300,
                   what="the API's start-up")
        assert client.get("/healthz").json() == {"status": "ready"}
        yield client


@pytest.fixture()
def start_api():
    """Starts an API from the environment as it is when called; stopped at teardown."""
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(started(create_app()))


@pytest.fixture()
def client(landing, start_api):
    return start_api()


def by_file(response):
    return {r["file"]: (r["status"], r["reason"]) for r in response.json()["results"]}


@pytest.mark.store
def test_four_files_four_results_then_unchanged_then_overwrite(client):
    first = client.post("/batch", files=upload(*FOUR))
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "done" and first.json()["run_id"]
    assert by_file(first) == {"guide.pdf": ("indexed", "ok"), "heat-pumps.txt": ("indexed", "ok"),
                              "locked.pdf": ("failed", "encrypted"),
                              "photo.pdf": ("skipped", "unsupported_type")}
    row = next(r for r in first.json()["results"] if r["file"] == "guide.pdf")
    assert row["pages"] == 4 and row["chunks"] == 4 and list(row) == [
        "file", "status", "reason", "pages", "ocr_pages", "chunks", "seconds", "detail", "source", "stored_as"]

    again = client.post("/batch", files=upload(*FOUR[:2]))
    assert by_file(again) == {"guide.pdf": ("unchanged", "unchanged"),
                              "heat-pumps.txt": ("unchanged", "unchanged")}
    forced = client.post("/batch?overwrite=true", files=upload(*FOUR[:2]))
    assert {s for s, _ in by_file(forced).values()} == {"updated"}

    found = client.get("/search", params={"q": "why are glacial lakes turquoise", "k": 1}).json()
    assert found["mode"] == "hybrid"
    hits = found["hits"]
    assert hits[0]["file"] == "guide.pdf" and hits[0]["page_start"] <= 2 <= hits[0]["page_end"]
    for mode in ("dense", "sparse"):
        found = client.get("/search", params={"q": "glacial lakes turquoise", "k": 1, "mode": mode})
        assert found.json()["mode"] == mode and found.json()["hits"][0]["file"] == "guide.pdf"
    assert client.get("/search", params={"q": "lakes", "mode": "fuzzy"}).status_code == 422
    assert client.get("/healthz").json() == {"status": "ready"}


def test_same_name_twice_in_one_request_is_kept_apart(client, landing):
    response = client.post("/batch", files=upload(("notes.txt", MIXED / "heat-pumps.txt"),
                                                  ("notes.txt", MIXED / "cafe-cp1252.txt")))
    results = response.json()["results"]
    assert [(r["file"], r["stored_as"], r["status"]) for r in results] == [
        ("notes.txt", "notes (2).txt", "indexed"), ("notes.txt", "notes.txt", "indexed")]
    assert sorted(p.name for p in landing.iterdir()) == ["notes (2).txt", "notes.txt"]
    assert (landing / "notes (2).txt").read_bytes() == (MIXED / "cafe-cp1252.txt").read_bytes()
    # Read back from the Prefect API, the rows name the files as they were uploaded too.
    again = client.get(f"/runs/{response.json()['run_id']}").json()["results"]
    assert [(r["file"], r["stored_as"]) for r in again] == [(r["file"], r["stored_as"]) for r in results]


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


def test_long_names_are_counted_in_bytes_and_nothing_lands(client, landing):
    # 72 Chinese characters are 216 bytes (220 with .txt): over the limit of 200, although only
    # 76 characters;
    # the file before it in the request must not land either.
    long = "报" * 72 + ".txt"
    response = client.post("/batch", files=[("files", ("first.txt", b"some text", "text/plain")),
                                             ("files", (long, b"more text", "text/plain"))])
    assert response.status_code == 400 and "220 bytes" in response.json()["detail"], response.text
    assert not landing.exists() or not any(landing.iterdir())
    fits = "报" * 64 + ".txt"  # 196 bytes; landing it twice in a request adds " (2)"
    twice = client.post("/batch", files=[("files", (fits, b"some text here", "text/plain")),
                                         ("files", (fits, b"other text there", "text/plain"))])
    assert twice.status_code == 200, twice.text
    assert [r["file"] for r in twice.json()["results"]] == [fits, fits]
    assert len(list(landing.iterdir())) == 2


def test_limits_and_missing_files(landing, monkeypatch, start_api):
    monkeypatch.setenv("INGEST_API_MAX_FILES", "2")
    monkeypatch.setenv("INGEST_API_MAX_FILE_MB", "0.002")  # ~2 KB: the guide PDF is larger
    client = start_api()
    too_many = client.post("/batch", files=upload(*FOUR[1:]))
    assert too_many.status_code == 413 and "limit of 2" in too_many.json()["detail"]
    too_big = client.post("/batch", files=upload(FOUR[1], FOUR[0]))
    assert too_big.status_code == 413 and "guide.pdf" in too_big.json()["detail"]
    assert not landing.exists() or not any(landing.iterdir())  # not even the small one
    assert client.post("/batch").status_code == 422


def test_api_key_is_required_and_never_echoed(landing, monkeypatch, start_api):
    monkeypatch.setenv("INGEST_API_KEY", KEY)
    client = start_api()
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
        deadline = time.monotonic() + 300  # model load and its own Prefect server; a busy machine
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
        output, _ = server.communicate(timeout=300)  # a graceful stop; a busy machine stretches it
    assert KEY not in output  # not in the server's logs either
    # The access log outlives the first flow run (Prefect's logging set-up used to replace it).
    assert '"POST /batch HTTP/1.1" 401' in output, output


def test_landing_on_s3(ingest_env, s3_bucket, monkeypatch, start_api):
    from tasks.core.sources import filesystem

    monkeypatch.setenv("INGEST_LANDING", f"s3://{s3_bucket}/landing")
    client = start_api()
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


def _asgi_post(app, *, body_chunks, headers) -> tuple[int, dict, int]:
    """POST /batch straight through ASGI with a lazily produced body; returns the status, the
    response headers and how many body bytes the app pulled."""
    import anyio

    pulled = 0
    sent: dict = {}

    async def receive():
        nonlocal pulled
        chunk = next(body_chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
            sent["headers"] = {k.decode(): v.decode() for k, v in message["headers"]}

    scope = {"type": "http", "method": "POST", "path": "/batch", "raw_path": b"/batch",
             "query_string": b"", "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
             "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 80),
             "client": ("127.0.0.1", 1), "root_path": ""}
    anyio.run(app, scope, receive, send)
    return sent["status"], sent["headers"], pulled


def test_request_bodies_are_bounded_while_they_stream(landing, monkeypatch):
    monkeypatch.setenv("INGEST_API_MAX_REQUEST_MB", "1")
    app = create_app()
    megabyte = b"x" * (1 << 20)

    def endless():  # 500 MB if anyone read it all
        yield b"--B\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.txt\"\r\n\r\n"
        for _ in range(500):
            yield megabyte

    streamed = {"content-type": "multipart/form-data; boundary=B"}
    status, headers, pulled = _asgi_post(app, body_chunks=endless(), headers=streamed)
    assert status == 413 and pulled <= 2 * (1 << 20)  # cut off after the limit, not at the end
    declared = streamed | {"content-length": str(500 << 20)}
    status, headers, pulled = _asgi_post(app, body_chunks=endless(), headers=declared)
    assert status == 413 and pulled == 0  # refused before a byte is read
    assert not landing.exists() or not any(landing.iterdir())


def test_a_full_queue_answers_503_with_retry_after_and_the_admitted_runs_finish(
        landing, monkeypatch, start_api, store_path, store_backend):
    from filelock import FileLock

    from tasks.core.settings import StoreLocation

    monkeypatch.setenv("INGEST_API_MAX_QUEUED", "1")
    client = start_api()
    # Another process's run holds the embedded store: the first upload's run waits for it.
    lock = FileLock(Path(StoreLocation.embedded(store_backend, store_path).path) / ".ingest-run.lock")
    lock.acquire()
    try:
        running = client.post("/batch?wait=false", files=upload(FOUR[1]))
        assert running.status_code == 202, running.text
        wait_until(lambda: client.get(f"/runs/{running.json()['run_id']}").json()["state"] == "RUNNING",
                   timeout=120, what="the first run to start")
        waiting = client.post("/batch?wait=false", files=upload(FOUR[0]))
        assert waiting.status_code == 202, waiting.text
        full = client.post("/batch", files=upload(("other.txt", MIXED / "cafe-cp1252.txt")))
        assert full.status_code == 503 and int(full.headers["Retry-After"]) >= 1, full.text
        assert "waiting" in full.json()["detail"]
        assert sorted(p.name for p in landing.iterdir()) == ["guide.pdf", "heat-pumps.txt"]
    finally:
        lock.release()
    for accepted in (running, waiting):
        run_id = accepted.json()["run_id"]
        state = wait_until(lambda: (s := client.get(f"/runs/{run_id}").json())["results"] and s["state"]
                           in ("COMPLETED", "FAILED", "CRASHED") and s,
                           timeout=300, what="the admitted runs to finish")
        assert state["state"] == "COMPLETED" and state["results"][0]["status"] == "indexed"


def test_until_the_prefect_api_answers_uploads_get_503_and_nothing_lands(landing, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from apps.prefect_api import connection

    monkeypatch.setenv("INGEST_PREFECT_START_TIMEOUT_S", "3")
    connection().stop()  # forget the test server, if an earlier test connected to it
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        with TestClient(create_app()) as client:
            wait_until(lambda: client.get("/healthz").json()["status"] == "failed", timeout=120,
                       what="the start-up to give up")
            health = client.get("/healthz")
            assert health.status_code == 503 and "INGEST_PREFECT_START_TIMEOUT_S" in health.json()["detail"]
            refused = client.post("/batch", files=upload(FOUR[1]))
            assert refused.status_code == 503 and refused.headers["Retry-After"], refused.text
            assert "INGEST_PREFECT_START_TIMEOUT_S" in refused.json()["detail"]
            assert client.get("/livez").json() == {"status": "alive"}
    connection().stop()
    assert not landing.exists() or not any(landing.iterdir())


def test_text_amplification_is_bounded_per_file(client, monkeypatch, tmp_path):
    from tests.data.generate import operator_flood_pdf

    # A few-KB PDF whose compressed content stream inflates to ~190,000 characters of text.
    monkeypatch.setenv("INGEST_MAX_FILE_CHUNKS", "40")
    pdf = operator_flood_pdf(5_000, text="glacier meltwater carries rock flour")
    assert len(pdf) < 10_000
    response = client.post("/batch", files=[("files", ("inflating.pdf", pdf, "application/pdf")),
                                            ("files", ("fine.txt", b"a short note", "text/plain"))])
    rows = {r["file"]: r for r in response.json()["results"]}
    assert rows["inflating.pdf"]["status"] == "failed" and rows["inflating.pdf"]["reason"] == "too_large"
    assert "INGEST_MAX_FILE_CHUNKS" in rows["inflating.pdf"]["detail"]
    assert rows["fine.txt"]["status"] == "indexed"
