"""The pure core of the pipeline: readers, chunking, embedding, the store adapter, records.

Nothing in this package imports Prefect; it is tested on its own.
"""
