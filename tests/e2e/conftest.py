"""End-to-end stack: a real `prefect server start`, moto (S3 + SQS), the served deployments and
the bucket watcher, each a real process on 127.0.0.1 with its own PREFECT_HOME."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_until  # noqa: F401 (wait_until: for the e2e tests)

ROOT = Path(__file__).resolve().parents[2]
# moto's server logs every request at INFO; the processes' own logs are in their files.
logging.getLogger("werkzeug").setLevel(logging.WARNING)
BIN = Path(sys.executable).parent


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


class Processes:
    """Started processes, logged to files, stopped (whole process group) at teardown."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[subprocess.Popen] = []

    def start(self, name: str, args: list[str], env: dict, cwd: Path = ROOT) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")
        process = subprocess.Popen(args, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.running.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        import signal

        for process in reversed(self.running):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


@dataclass
class Stack:
    api_url: str
    bucket: str
    queue_url: str
    store: Path
    env: dict
    processes: Processes


def base_env(tmp: Path, api_url: str, store: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "QDRANT_", "PREFECT_"))}
    env.update(PREFECT_API_URL=api_url, PREFECT_HOME=str(tmp / "client-home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONUNBUFFERED="1",
               INGEST_QDRANT_PATH=str(store), INGEST_RETRY_BACKOFF_S="0")
    return env


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """`prefect server start` on 127.0.0.1 with an isolated PREFECT_HOME; yields its API URL."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    tmp = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    processes = Processes(tmp)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp / "home"), PREFECT_SERVER_API_HOST="127.0.0.1",
               PREFECT_SERVER_API_PORT=str(port), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    processes.start("server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port), "--analytics-off"], env)
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_until(lambda: _healthy(url), timeout=90, what="prefect server")
        with temporary_settings({PREFECT_API_URL: url}):
            yield url
    finally:
        processes.stop_all()


@pytest.fixture(scope="module")
def stack(prefect_api, moto_endpoint, tmp_path_factory) -> Stack:
    """A bucket whose notifications go to SQS, the served deployments, and the watcher."""
    import boto3

    tmp = tmp_path_factory.mktemp("e2e")
    bucket = f"e2e-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    queue_url = sqs.create_queue(QueueName=f"{bucket}-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})

    store = tmp / "store"
    env = base_env(tmp, prefect_api, store)
    processes = Processes(tmp)
    serve_env = {**env, "INGEST_SCHEDULE_SOURCES": f"s3://{bucket}/inbox/",
                 "INGEST_SCHEDULE_TIMEZONE": "Europe/Zurich", "INGEST_WATCH_URL": f"s3://{bucket}/inbox/",
                 "INGEST_DEPLOY_COLLECTION": "docs", "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    processes.start("serve", [sys.executable, "deployments/serve.py"], serve_env)
    processes.start("watch", [str(BIN / "ingest"), "watch", f"s3://{bucket}/inbox/", "--queue-url", queue_url,
                              "--settle", "1.5", "--state", str(tmp / "watch.sqlite")], env)
    try:
        yield Stack(prefect_api, bucket, queue_url, store, env, processes)
    finally:
        processes.stop_all()
