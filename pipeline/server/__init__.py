"""The team tracking server: MLflow on PostgreSQL (``python -m pipeline.server start|stop``)."""
