"""Prefect deployments of the ingest flow (see ``prefect.yaml`` and ``serve.py``)."""
