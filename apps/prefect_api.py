"""This process's Prefect API: the server ``PREFECT_API_URL`` names, or a temporary one it owns.

Prefect's ephemeral mode starts its temporary server lazily, inside whatever call first needs
the API, gives it 20 s, and is not thread-safe: on a busy machine the upload API's first
requests each launched a server, timed out (a 500) and left the servers running after the API
stopped. Entry points (``ingest run``, ``ingest api``, the test suite) instead start it **once,
up front** — early, so the start overlaps the model load — wait for it with a deadline fit for a
busy machine (``INGEST_PREFECT_START_TIMEOUT_S``), point the whole process at it, and own its
end: stopped when the process exits, and gone within a second when the process dies (the
server watches its parent, so a ``kill -9`` leaves nothing behind either).

    python -m apps.prefect_api --port P --parent PID   # the server process itself
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import httpx

from tasks.core.errors import IngestError

# How often the server checks that its parent is alive, and how long it may take to stop.
PARENT_POLL_S = 0.5
STOP_GRACE_S = 10.0


class PrefectUnavailable(IngestError):
    """The Prefect API could not be reached (or started) in time."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(f"{url}/health").status_code == 200
    except httpx.HTTPError:
        return False


def _configured_url() -> str | None:
    """``PREFECT_API_URL`` as Prefect sees it: the environment, a profile, or a settings
    context (the test harness sets one)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def _point_prefect_at(url: str | None) -> None:
    """Make ``url`` (this process's temporary server) the API of every Prefect client of this
    process, threads included (they read the process-global settings when their own context
    holds none); ``None``: back to the environment's.

    Flow runs against the temporary server send no heartbeats. Heartbeats let a server mark a
    run whose process died as crashed; this server ends with this process, so nothing is left
    to mark — and Prefect's heartbeat thread sleeps in whole seconds, which its flow run waits
    out when it ends: up to 1 s added to every run (a one-task flow took 1.17 s, 0.30 s
    without). A server named by ``PREFECT_API_URL`` keeps Prefect's heartbeats."""
    if url is None:
        os.environ.pop("PREFECT_API_URL", None)
    else:
        os.environ["PREFECT_API_URL"] = url
    import prefect.context  # its settings were read at import: refresh them

    prefect.context.refresh_global_settings_context()
    if url is not None:
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY

        context = prefect.context.GLOBAL_SETTINGS_CONTEXT
        prefect.context.GLOBAL_SETTINGS_CONTEXT = context.model_copy(update={
            "settings": context.settings.copy_with_update(
                updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})})


class PrefectConnection:
    """The Prefect API of this process (one per process: ``connection()``).

    ``start()`` returns at once (a temporary server is launched, nothing waited for);
    ``wait_ready()`` blocks until the API answers or the deadline passes; ``stop()`` ends the
    temporary server, if this process started one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._log: tempfile._TemporaryFileWrapper | None = None
        self._url: str | None = None
        self._external = False
        self._ready = threading.Event()
        self._error: str | None = None
        self._started_at = 0.0
        self._deadline_s = 0.0

    @property
    def url(self) -> str | None:
        return self._url

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def owns_server(self) -> bool:
        return self._process is not None

    @property
    def started(self) -> bool:
        return self._url is not None

    def start(self, deadline_s: float) -> None:
        """Use ``PREFECT_API_URL`` if set, else launch a temporary server (once; later calls
        do nothing). ``deadline_s`` bounds ``wait_ready``."""
        with self._lock:
            if self._url is not None:
                return
            self._deadline_s, self._started_at, self._error = deadline_s, time.monotonic(), None
            external = _configured_url()
            if external:
                self._url, self._external = external.rstrip("/"), True
                return
            self._launch()
            atexit.register(self.stop)

    def _launch(self) -> None:
        port = _free_port()
        self._log = tempfile.NamedTemporaryFile(prefix="ingest-prefect-server-", suffix=".log")
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "apps.prefect_api", "--port", str(port),
             "--parent", str(os.getpid())],
            env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=os.getcwd(), start_new_session=True)  # a Ctrl-C of the terminal is ours to relay
        self._url = f"http://127.0.0.1:{port}/api"

    def wait_ready(self) -> str:
        """The API's URL once it answers; ``PrefectUnavailable`` (one line naming the setting)
        when it does not within the deadline, or the temporary server exits."""
        if self._ready.is_set():
            return self._url  # type: ignore[return-value]
        # One client for every poll: a new one loads the system's CA certificates each time
        # (~30 ms of CPU, every 0.2 s, while the server and the model start on both cores).
        with httpx.Client(timeout=5.0) as client:
            self._poll_until_healthy(client)
        with self._lock:
            if not self._external:
                _point_prefect_at(self._url)
            self._ready.set()
        return self._url  # type: ignore[return-value]

    def _poll_until_healthy(self, client: httpx.Client) -> None:
        while True:
            if self._error:
                raise PrefectUnavailable(self._error)
            if self._url is None:
                raise PrefectUnavailable("the Prefect API was not started")
            process = self._process
            if process is not None and process.poll() is not None:
                self._fail(f"the temporary Prefect server exited with code {process.returncode}"
                           f"{self._last_log_line()}")
            if _healthy(client, self._url):
                return
            waited = time.monotonic() - self._started_at
            if waited > self._deadline_s:
                where = (f"the Prefect API at {self._url}" if self._external
                         else "Prefect's temporary server")
                self._fail(f"{where} did not answer within {self._deadline_s:g} s "
                           "(INGEST_PREFECT_START_TIMEOUT_S; a busy machine may need more)")
            time.sleep(0.2)

    def _fail(self, message: str) -> None:
        self._error = message
        if not self._external:
            self.stop()  # a server that missed its deadline is not left running
        raise PrefectUnavailable(message)

    def _last_log_line(self) -> str:
        if self._log is None:
            return ""
        try:
            lines = [line for line in open(self._log.name, errors="replace").read().splitlines()
                     if line.strip()]
        except OSError:
            return ""
        return f": {lines[-1].strip()}" if lines else ""

    def stop(self) -> None:
        """Stop the temporary server (if this process started one) and forget the API."""
        with self._lock:
            process, self._process = self._process, None
            if process is not None:
                if process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(STOP_GRACE_S)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
                if self._ready.is_set():
                    _point_prefect_at(None)
            if self._log is not None:
                self._log.close()
                self._log = None
            self._url, self._external = None, False
            self._ready.clear()


_connection = PrefectConnection()


def connection() -> PrefectConnection:
    """This process's Prefect connection."""
    return _connection


def prefect_api_ready(deadline_s: float | None = None) -> str:
    """Start this process's Prefect API (or reach ``PREFECT_API_URL``) and wait for it; its URL.

    What a script calling the flow directly does first: Prefect's own lazy start gives its
    temporary server 20 s, which a busy machine exceeds. ``deadline_s`` defaults to
    ``INGEST_PREFECT_START_TIMEOUT_S``.
    """
    if deadline_s is None:
        from tasks.core.settings import IngestSettings

        deadline_s = IngestSettings().prefect_start_timeout_s
    _connection.start(deadline_s)
    return _connection.wait_ready()


# --- the server process -------------------------------------------------------------------

def _watch_parent(parent: int) -> None:
    """End this server when the process that started it is gone (reparented: ``getppid``
    changes), however that process ended."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown closes the database
    time.sleep(STOP_GRACE_S)
    os._exit(1)


#: Read-only requests (method, path, JSON body) to the routers a run uses: the server builds a
#: router's routes (FastAPI's request models and validators) on the first request that enters
#: it, ~0.8–1 s for these.
WARM_UP = (("GET", "/admin/version", None),
           *(("POST", f"/{router}/filter", {"limit": 1})
             for router in ("flows", "flow_runs", "task_runs", "artifacts", "logs")))


def _warm_up(server, url: str) -> None:
    """Once ``server`` (uvicorn's) has started, send it ``WARM_UP``'s requests: that work is
    done while the process that started the server is still loading its model, not when its
    first flow run waits for the answers (measured: a first one-task flow run 1.29–1.43 s cold,
    0.41–0.49 s after them)."""
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.1)
    with contextlib.suppress(httpx.HTTPError), httpx.Client(base_url=url, timeout=60) as client:
        for method, path, body in WARM_UP:
            client.request(method, path, json=body)


def _serve(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Prefect's API server, ended with its parent")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args(argv)
    if os.getppid() != args.parent:
        sys.exit(1)  # the parent died before this process got going
    threading.Thread(target=_watch_parent, args=(args.parent,), daemon=True,
                     name="watch-parent").start()
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(
        "prefect.server.api.server:create_app", factory=True, host="127.0.0.1", port=args.port,
        log_level="error", lifespan="on"))
    threading.Thread(target=_warm_up, args=(server, f"http://127.0.0.1:{args.port}/api"),
                     daemon=True, name="warm-up").start()
    server.run()


if __name__ == "__main__":
    _serve()
