"""Flow tests run against Prefect's test harness (a temporary server with its own database)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture()
def ingest_env(monkeypatch, store_path):
    """Settings for one flow run: a fresh embedded store, no waiting between retries."""
    monkeypatch.setenv("INGEST_QDRANT_PATH", str(store_path))
    monkeypatch.setenv("INGEST_RETRY_BACKOFF_S", "0")
    monkeypatch.setenv("INGEST_FILES_PER_TASK", "4")
    return store_path
