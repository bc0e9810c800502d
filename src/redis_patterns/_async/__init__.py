"""The facades of one flavour, a module per pattern (``_sync/`` is generated from ``_async/``)."""
