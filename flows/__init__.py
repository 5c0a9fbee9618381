"""Prefect flows of the ingest pipeline and the ``ingest`` command line."""
