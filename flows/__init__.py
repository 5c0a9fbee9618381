"""The Prefect flow of the ingest pipeline and what it reports (artifacts, progress)."""
