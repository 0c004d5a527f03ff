"""What a person sees in MLflow (#27), against a real sqlite store."""

from __future__ import annotations

import mlflow

from pipeline import tracking
from pipeline.tracking import store


def test_experiment_opens_on_training_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    exp_id = tracking.setup("fresh", root=tmp_path)
    tags = mlflow.get_experiment(exp_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"


def test_existing_experiment_without_kind_gets_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(store.tracking_uri(tmp_path))
    old = mlflow.create_experiment("old", artifact_location=store.artifact_location(tmp_path))
    assert "mlflow.experimentKind" not in mlflow.get_experiment(old).tags
    assert tracking.setup("old", root=tmp_path) == old
    assert mlflow.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
