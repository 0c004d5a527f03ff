"""Serving the champion over HTTP: ``python -m pipeline.serve`` (``make serve``), the page
to draw a digit, and ``python -m pipeline.serve.bench`` (``make bench-serve``)."""
