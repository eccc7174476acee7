"""End-to-end pipelines behind the ``hyperode`` command."""
