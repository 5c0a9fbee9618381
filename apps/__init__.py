"""Entry points: the ``ingest`` command line (``cli``), the HTTP upload API (``api``) and the
bucket watcher's event sender (``events``). They parse input, call the flow or the core, and
present results with the shared serializers of ``tasks.core.rows``."""
