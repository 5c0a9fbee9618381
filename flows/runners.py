"""The Dask task runner for ``read``, ``chunk`` and ``embed`` (see ``ingest_flow.placement``).

On Dask, workers read, parse, chunk and embed (each worker process loads the model once: it
is held by the worker's ``tasks.core.resources`` owner), and the vectors come back to the
flow's process, which stores them. So the embedded store works unchanged (it stays in the one
process that opened it), and a Qdrant server works too.
"""

from __future__ import annotations

from tasks.core.errors import ConfigError


def dask_runner(address: str | None, workers: int | None):
    """A ``DaskTaskRunner`` for an existing cluster (``address``) or a temporary local one of
    ``workers`` processes; ``None`` for neither (threads in the flow's process)."""
    if not address and not workers:
        return None
    if address and workers:
        raise ConfigError("choose one: INGEST_DASK_ADDRESS (an existing cluster) or "
                          "INGEST_DASK_WORKERS (a temporary local one)")
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise ConfigError("Dask needs the 'dask' extra: pip install 'knowledge-ingest[dask]'") from exc
    if address:
        return DaskTaskRunner(address=address)
    # One thread per worker process: torch already uses the cores inside a process.
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1,
                                          "processes": True, "host": "127.0.0.1",
                                          "dashboard_address": "127.0.0.1:0"})
