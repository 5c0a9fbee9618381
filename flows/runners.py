"""Where file groups run: threads in this process (default), or Dask workers.

On Dask, workers read, parse, chunk and embed (each worker process loads the model once:
``get_embedder`` is an ``lru_cache`` in an importable module), and the points come back to
the flow's process, which writes them. So the embedded store works unchanged (it stays in the
one process that opened it), and a Qdrant server works too.
"""

from __future__ import annotations

from tasks.core.errors import ConfigError
from tasks.core.settings import IngestSettings


def dask_runner(settings: IngestSettings):
    """A ``DaskTaskRunner`` for the settings, or ``None`` for the default threads."""
    if not settings.dask_address and not settings.dask_workers:
        return None
    if settings.dask_address and settings.dask_workers:
        raise ConfigError("choose one: INGEST_DASK_ADDRESS (an existing cluster) or "
                          "INGEST_DASK_WORKERS (a temporary local one)")
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise ConfigError("Dask needs the 'dask' extra: pip install 'knowledge-ingest[dask]'") from exc
    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    # One thread per worker process: torch already uses the cores inside a process.
    return DaskTaskRunner(cluster_kwargs={"n_workers": settings.dask_workers, "threads_per_worker": 1,
                                          "processes": True, "host": "127.0.0.1",
                                          "dashboard_address": "127.0.0.1:0"})
