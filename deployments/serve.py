"""Serve the ingest deployments from one process (single-machine setup).

    PREFECT_API_URL=http://127.0.0.1:4200/api python deployments/serve.py

Runs started from the Prefect UI ("Custom run") get a form built from ``IngestParams``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python deployments/serve.py` puts deployments/ first on sys.path; the flows live one up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import serve  # noqa: E402

from flows.ingest_flow import ingest_documents  # noqa: E402

# One run per store at a time: the embedded Qdrant store admits a single writing process.
CONCURRENCY = 1


def build_deployments() -> list:
    """The deployments this project serves (also used by tests, without a server)."""
    manual = ingest_documents.to_deployment(
        name="manual",
        description="Ingest documents on demand: fill in the sources in the run form.",
        tags=["ingest"],
        concurrency_limit=CONCURRENCY,
    )
    return [manual]


def main() -> None:
    serve(*build_deployments())


if __name__ == "__main__":
    main()
