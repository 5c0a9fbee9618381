"""Flow tests run against Prefect's test harness (a temporary server with its own database)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_server():
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # A busy machine took up to 40 s to start this server; its deadline leaves room for more.
    # No heartbeats, as on the product's own temporary server (``apps.prefect_api``).
    with prefect_test_harness(server_startup_timeout=300), temporary_settings(
            updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


@pytest.fixture()
def ingest_env(monkeypatch, store_path):
    """Settings for one flow run: a fresh embedded store, no waiting between retries."""
    monkeypatch.setenv("INGEST_QDRANT_PATH", str(store_path))
    monkeypatch.setenv("INGEST_RETRY_BACKOFF_S", "0")
    monkeypatch.setenv("INGEST_FILES_PER_TASK", "4")
    return store_path


@pytest.fixture(scope="session")
def subprocess_prefect_home(tmp_path_factory):
    """One PREFECT_HOME for every ``ingest`` subprocess: its database migrates once (~15 s)."""
    return tmp_path_factory.mktemp("prefect-subprocess-home")


@pytest.fixture()
def cli_env(subprocess_prefect_home, tmp_path):
    """Environment for an ``ingest`` subprocess: its own store, the shared Prefect home."""
    import os

    env = {**os.environ, "INGEST_QDRANT_PATH": str(tmp_path / "store"),
           "PREFECT_HOME": str(subprocess_prefect_home), "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL", None)  # each process starts its own server (see served_env)
    env.pop("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", None)  # set by in-process CLI tests
    return env


@pytest.fixture()
def served_env(cli_env):
    """``cli_env`` pointed at this worker's Prefect server (the test harness's), as a deployment
    points its runs at a Prefect server: for tests of what a run does rather than of the
    temporary server a run starts on its own (``test_prefect_ownership``), which costs every
    process ~9 s of CPU."""
    from prefect.settings import PREFECT_API_URL

    return {**cli_env, "PREFECT_API_URL": PREFECT_API_URL.value()}


@pytest.fixture()
def flaky_store_writes(monkeypatch):
    """A fault at the store adapter's boundary: chosen files' point writes fail transiently."""
    from tasks.core.errors import StoreUnavailableError
    from tasks.core.store.edge import EdgeStore
    from tasks.core.store.qdrant import QdrantClientStore

    state = {"failures_left": 0, "victim": "heat-pumps.txt", "attempts": 0}

    def patch(cls):
        original = cls._upsert

        def upsert(self, collection, points):
            if any(str(p.payload.get("source", "")).endswith(state["victim"]) for p in points):
                state["attempts"] += 1
                if state["failures_left"] != 0:
                    state["failures_left"] -= 1
                    raise StoreUnavailableError("connection reset by the store")
            return original(self, collection, points)

        monkeypatch.setattr(cls, "_upsert", upsert)

    patch(EdgeStore)
    patch(QdrantClientStore)
    return state
