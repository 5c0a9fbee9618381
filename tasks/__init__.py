"""Prefect tasks of the ingest pipeline; the work itself lives in ``tasks.core``."""
