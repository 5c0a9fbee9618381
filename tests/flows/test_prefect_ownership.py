"""Entry points own their Prefect server: started once up front, never left behind.

Real processes: ``ingest api`` and ``ingest run`` as a user starts them, stopped with SIGTERM
or killed with SIGKILL; the temporary Prefect server each starts must be gone afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import MIXED, free_port, wait_until

pytestmark = [pytest.mark.flow, pytest.mark.once, pytest.mark.faults]
INGEST = str(Path(sys.executable).parent / "ingest")


def prefect_servers(parent: int) -> list[int]:
    """Live temporary Prefect servers that process ``parent`` started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"apps.prefect_api" in args and str(parent).encode() in args and state != "Z":
            found.append(int(entry.name))
    return found


def stop_and_expect_no_server(process: subprocess.Popen, stop: signal.Signals) -> None:
    """Stop ``process`` with ``stop``; no Prefect server it started may outlive it."""
    process.send_signal(stop)
    process.wait(timeout=120)
    wait_until(lambda: not prefect_servers(process.pid), timeout=60,
               what="its Prefect server to stop with it")


def cleanup(process: subprocess.Popen) -> None:
    """Whatever a failed test left running: the process and its servers."""
    if process.poll() is None:
        process.kill()
    for pid in prefect_servers(process.pid):
        os.kill(pid, signal.SIGKILL)


def start_api(env: dict, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(tmp_path / f"api-{port}.log", "w")
    process = subprocess.Popen([INGEST, "api", "--port", str(port)], env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    return process, f"http://127.0.0.1:{port}"


def ready(base: str, process: subprocess.Popen) -> bool:
    assert process.poll() is None, "the API exited"
    try:
        return httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def uploads_while_starting(base: str, api: subprocess.Popen, clients: int = 6) -> list[tuple[int, str]]:
    """``clients`` concurrent uploads sent the moment the API accepts connections (before it
    is ready): each one's status and Retry-After."""
    import threading

    wait_until(lambda: api.poll() is None and _answers(base), timeout=300, what="the API to listen")
    answers: list[tuple[int, str]] = []

    def post() -> None:
        reply = httpx.post(f"{base}/batch", files=[("files", ("a.txt", b"some text", "text/plain"))],
                           timeout=300)
        answers.append((reply.status_code, reply.headers.get("Retry-After", "")))

    threads = [threading.Thread(target=post) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == clients
    return answers


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/livez", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture()
def api_env(cli_env, tmp_path):
    return {**cli_env, "INGEST_LANDING": str(tmp_path / "landing")}


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL],
                         ids=["SIGTERM", "SIGINT", "SIGKILL"])
def test_the_api_leaves_no_prefect_server_behind(api_env, tmp_path, stop):
    api, base = start_api(api_env, tmp_path)
    try:
        if stop == signal.SIGTERM:  # once: uploads racing the start-up are told to come back
            early = uploads_while_starting(base, api)
            assert {status for status, _ in early} <= {200, 503}, early
            assert all(retry for status, retry in early if status == 503), early
        wait_until(lambda: ready(base, api), timeout=300, what="the API to be ready")
        assert len(prefect_servers(api.pid)) == 1  # one server, started at start-up
        reply = httpx.post(f"{base}/batch", files=[("files", ("a.txt", b"about heat pumps", "text/plain"))],
                           timeout=300)
        assert reply.status_code == 200, reply.text
        assert len(prefect_servers(api.pid)) == 1  # the request started none
        stop_and_expect_no_server(api, stop)
    finally:
        cleanup(api)


def test_a_killed_cli_run_leaves_no_prefect_server_behind(cli_env, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(300):
        (folder / f"note-{i:03}.txt").write_text(f"note {i} about alpine lakes and rock flour " * 40)
    run = subprocess.Popen([INGEST, "run", str(folder)], env=cli_env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: prefect_servers(run.pid) or run.poll() is not None, timeout=120,
                   what="the run's Prefect server")
        assert run.poll() is None, "the run ended before it could be killed"
        stop_and_expect_no_server(run, signal.SIGKILL)
    finally:
        cleanup(run)


def test_a_prefect_api_past_its_deadline_is_one_line_naming_the_setting(cli_env):
    env = {**cli_env, "INGEST_PREFECT_START_TIMEOUT_S": "2",
           "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}  # nothing answers there
    result = subprocess.run([INGEST, "run", str(MIXED / "heat-pumps.txt")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "INGEST_PREFECT_START_TIMEOUT_S" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_temporary_server_past_its_deadline_is_stopped_not_left_running():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from apps.prefect_api import PrefectConnection, PrefectUnavailable

    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # no harness server here
        own = PrefectConnection()
        own.start(deadline_s=0.0)
        assert own.owns_server
        # Popen returns when the child's exec has begun (CPython forks with vfork, which lets the
        # parent go once the new program's memory replaces the old) but its command line is set
        # a moment later: on a busy machine a scan of /proc right away can see it empty.
        wait_until(lambda: len(prefect_servers(os.getpid())) == 1, timeout=60,
                   what="the temporary server's process")
        with pytest.raises(PrefectUnavailable, match="INGEST_PREFECT_START_TIMEOUT_S"):
            own.wait_ready()
        assert not own.owns_server and not prefect_servers(os.getpid())
        with pytest.raises(PrefectUnavailable, match="INGEST_PREFECT_START_TIMEOUT_S"):
            own.wait_ready()  # the same answer again, not a hang


def test_waiting_for_the_api_polls_with_one_client(monkeypatch):
    # A new HTTP client per poll loads the CA certificates again (~30 ms of CPU every 0.2 s,
    # taken from the server and the model starting on the same two cores).
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from apps import prefect_api

    made = []

    class Counted(httpx.Client):
        def __init__(self, *args, **kwargs):
            made.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(prefect_api.httpx, "Client", Counted)
    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        own = prefect_api.PrefectConnection()
        own.start(deadline_s=1.0)  # nothing answers there: polls until the deadline
        with pytest.raises(prefect_api.PrefectUnavailable):
            own.wait_ready()
    assert made == [1]


def test_flow_runs_on_the_own_temporary_server_send_no_heartbeats():
    """Heartbeats mark a dead process's runs as crashed on a server that outlives it; a
    temporary server ends with its process, and the heartbeat thread's whole-second sleeps
    would be waited out at the end of every run."""
    import threading

    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    from apps.prefect_api import PrefectConnection

    def in_a_new_thread():  # a thread without a settings context reads the process's own
        found = {}
        thread = threading.Thread(target=lambda: found.update(
            heartbeat=get_current_settings().flows.heartbeat_frequency,
            url=get_current_settings().api.url))
        thread.start()
        thread.join()
        return found

    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # no harness server here
        default = in_a_new_thread()["heartbeat"]
        assert default is not None
        own = PrefectConnection()
        own.start(deadline_s=300)
        try:
            url = own.wait_ready()
            assert in_a_new_thread() == {"heartbeat": None, "url": url}
        finally:
            own.stop()
        assert in_a_new_thread()["heartbeat"] == default


def test_every_warm_up_request_is_one_prefects_server_answers():
    """The temporary server sends itself ``WARM_UP`` once it has started (each router's first
    request builds its routes); requests its Prefect version does not know would warm nothing."""
    from prefect.settings import PREFECT_API_URL

    from apps.prefect_api import WARM_UP

    url = PREFECT_API_URL.value()  # the harness's server
    with httpx.Client(base_url=url, timeout=120) as client:
        for method, path, body in WARM_UP:
            response = client.request(method, path, json=body)
            assert response.status_code == 200, (method, path, response.text)
