"""Infrastructure faults with real processes: the S3 endpoint goes away for 10 s in the middle
of a run, and SIGTERM arrives in the middle of a run."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import assert_same_store, free_port, wait_until
from tests.flows.test_reruns_real_processes import (
    SCRIPT,
    reference_store,
    start_and_wait_for_indexed,
    stored_now,
    write_corpus,
)

pytestmark = [pytest.mark.flow, pytest.mark.faults, pytest.mark.once]
logging.getLogger("werkzeug").setLevel(logging.WARNING)


@pytest.fixture()
def env(cli_env):
    """One file per task run and one worker: the run advances file by file."""
    return {**cli_env, "INGEST_FILES_PER_TASK": "1", "INGEST_WORKERS": "1"}


def test_s3_outage_mid_run_is_ridden_out(env, served_env, tmp_path):
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        s3.create_bucket(Bucket="outage-bucket")
        corpus = write_corpus(tmp_path / "corpus", files=16)
        for path in sorted(corpus.iterdir()):
            s3.put_object(Bucket="outage-bucket", Key=f"docs/{path.name}", Body=path.read_bytes())
        run_env = {**env, "PREFECT_API_URL": served_env["PREFECT_API_URL"], "AWS_ENDPOINT_URL": endpoint,
                   "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1",
                   # Backoff 1, 2, 4, 8, 16 s: the retries outlast a 6 s outage.
                   "INGEST_RETRIES": "5", "INGEST_RETRY_BACKOFF_S": "1"}
        run = start_and_wait_for_indexed([str(SCRIPT), "run", "s3://outage-bucket/docs/", "--json",
                                          "--verbose"], run_env, count=3)
        server.stop()
        time.sleep(6)
        assert run.poll() is None  # the outage fell in the middle of the run
        server.start()
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-3000:]
        summary = json.loads(out)
        assert {f["status"] for f in summary["files"]} == {"indexed"}, summary["files"]
        assert summary["totals"]["files"] == 16
        # Ridden out by s3fs's own retries or, beyond them, by Prefect's task retries.
        assert "source_unavailable" not in out

        rerun = subprocess.run([str(SCRIPT), "run", "s3://outage-bucket/docs/", "--json"], env=run_env,
                               capture_output=True, text=True, timeout=300)
        assert {f["status"] for f in json.loads(rerun.stdout)["files"]} == {"unchanged"}
        stored = stored_now(env)
        assert len({p["source"] for p, _ in stored.values()}) == 16  # none lost
        assert len(stored) == summary["totals"]["chunks"]  # none duplicated
    finally:
        server.stop()


def _prefect_processes_of(home: str) -> list[int]:
    """PIDs whose environment names this PREFECT_HOME (e.g. a temporary Prefect server)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"PREFECT_HOME={home}".encode() in (entry / "environ").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_sigterm_finishes_files_in_flight_and_the_next_run_completes(env, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", files=16)
    run = start_and_wait_for_indexed([str(SCRIPT), "run", str(corpus), "--json", "--verbose"], env, count=3)
    os.kill(run.pid, signal.SIGTERM)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 143, err[-3000:]
    summary = json.loads(out)
    assert summary["interrupted"] is True
    done = summary["files"]
    assert 3 <= len(done) < 16 and {f["status"] for f in done} == {"indexed"}
    assert "interrupted" in err and "Traceback" not in err
    wait_until(lambda: _prefect_processes_of(env["PREFECT_HOME"]) == [], timeout=60,
               what="its temporary server to go with it")

    rerun = subprocess.run([str(SCRIPT), "run", str(corpus), "--json"], env=env, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    statuses = [f["status"] for f in json.loads(rerun.stdout)["files"]]
    assert statuses.count("unchanged") == len(done) and statuses.count("indexed") == 16 - len(done)
    assert_same_store(stored_now(env), reference_store(tmp_path, corpus))


SECRETS = {"AWS_ACCESS_KEY_ID": "AKIASEKRITACCESSKEY7", "AWS_SECRET_ACCESS_KEY": "sekrit-aws-secret-0d9f8e",
           "QDRANT_API_KEY": "sekrit-qdrant-key-5a4b", "INGEST_API_KEY": "sekrit-upload-key-77c1"}


def _leaks(*texts: str, folder: Path) -> list[str]:
    """Which secret values appear in the texts or in any file under ``folder``."""
    blobs = [t.encode() for t in texts]
    blobs += [p.read_bytes() for p in folder.rglob("*") if p.is_file()]
    return [name for name, value in SECRETS.items() if any(value.encode() in blob for blob in blobs)]


def test_secrets_never_reach_output_logs_artifacts_or_parameters(env, moto_endpoint, s3_bucket, tmp_path):
    """Every kind of run with secrets set; then everything produced is grepped for them: standard
    output and error (with Prefect's logs), API responses, and Prefect's whole database (flow
    run parameters, logs, artifacts, events)."""
    import urllib.request

    from tests.conftest import MIXED, upload_folder

    upload_folder(s3_bucket, "docs", MIXED)
    secret_env = {**env, **SECRETS, "AWS_ENDPOINT_URL": moto_endpoint}
    outputs = []

    ok = subprocess.run([str(SCRIPT), "run", f"s3://{s3_bucket}/docs/", "--json", "--verbose"],
                        env=secret_env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    outputs += [ok.stdout, ok.stderr]
    # A Qdrant server that does not answer: the error names the URL, never the key.
    down = subprocess.run([str(SCRIPT), "run", str(MIXED), "--json", "--verbose"],
                          env={**secret_env, "QDRANT_URL": f"http://127.0.0.1:{free_port()}"},
                          capture_output=True, text=True, timeout=300)
    assert down.returncode == 1 and "127.0.0.1" in down.stderr
    outputs += [down.stdout, down.stderr]

    port = free_port()
    api = subprocess.Popen([str(SCRIPT), "api", "--port", str(port)], env=secret_env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def call(key: str) -> str:
            body = (b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"note.txt\"\r\n"
                    b"Content-Type: text/plain\r\n\r\nGlacial lakes are turquoise.\r\n--b--\r\n")
            request = urllib.request.Request(f"http://127.0.0.1:{port}/batch", data=body, method="POST",
                                             headers={"Content-Type": "multipart/form-data; boundary=b",
                                                      "X-API-Key": key})
            try:
                with urllib.request.urlopen(request, timeout=120) as reply:
                    return reply.read().decode()
            except urllib.error.HTTPError as exc:
                return f"{exc.code} {exc.read().decode()}"

        deadline = time.monotonic() + 300  # its own Prefect server starts first; a busy machine
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "API did not start"
                time.sleep(0.5)
        refused = call("wrong-key")
        assert refused.startswith("401")
        accepted = call(SECRETS["INGEST_API_KEY"])
        assert "indexed" in accepted, accepted
        outputs += [refused, accepted]
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        # A deadline for the graceful stop (the queue, the stores, Prefect's server), not a wait:
        # on the busy CI it once ran past 60 s (under a second beside three CPU hogs alone).
        outputs.append(api.communicate(timeout=300)[0])

    # The grep reaches where run data lives: the bucket (a flow run parameter) is in there.
    home = Path(env["PREFECT_HOME"])
    assert any(s3_bucket.encode() in p.read_bytes() for p in home.rglob("*.db*") if p.is_file())
    assert _leaks(*outputs, folder=home) == []
    assert _leaks(folder=Path(env["INGEST_QDRANT_PATH"]).parent) == []
