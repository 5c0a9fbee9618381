"""Serve the ingest deployments from one process (single-machine setup).

    PREFECT_API_URL=http://127.0.0.1:4200/api python deployments/serve.py

Which deployments are served depends on the environment (see ``definitions.py``): ``manual``
always; ``scheduled`` with ``INGEST_SCHEDULE_SOURCES``; ``on-new-objects`` with
``INGEST_WATCH_URL``. Each flow run executes in its own subprocess.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# `python deployments/serve.py` puts deployments/ first on sys.path; the flows live one up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Look for scheduled and triggered runs every 2 s instead of Prefect's default 10 s: the delay
# from an upload to its run starting is mostly this poll.
os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from deployments.definitions import build_deployments  # noqa: E402


def main() -> None:
    from prefect import serve

    deployments = build_deployments()
    print("serving: " + ", ".join(d.name for d in deployments), flush=True)
    serve(*deployments)


if __name__ == "__main__":
    main()
