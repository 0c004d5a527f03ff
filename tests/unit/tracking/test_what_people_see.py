"""What a person sees in MLflow (#27), against a real sqlite store."""

from __future__ import annotations

import subprocess

import mlflow

from pipeline import tracking
from pipeline.tracking import provenance, store
from tests.helpers import empty_store


def test_experiment_opens_on_training_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    empty_store(tmp_path)
    exp_id = tracking.setup("fresh", root=tmp_path)
    tags = mlflow.get_experiment(exp_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"


def test_existing_experiment_without_kind_gets_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    empty_store(tmp_path)
    mlflow.set_tracking_uri(store.tracking_uri(tmp_path))
    old = mlflow.create_experiment("old", artifact_location=store.artifact_location(tmp_path))
    assert "mlflow.experimentKind" not in mlflow.get_experiment(old).tags
    assert tracking.setup("old", root=tmp_path) == old
    assert mlflow.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"


def _repo_with_params(root, text):
    def git(*args):
        subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)

    git("init", "-q")
    (root / "params.yaml").write_text(text)
    git("add", "params.yaml")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "params")


PARAMS = """\
seed: 1
models:
  dense_mlp:
    train: {learning_rate: 0.01, epochs: 3}
  keras_cnn:
    train: {learning_rate: 0.001}
"""


def test_exp_run_is_named_by_what_changed(tmp_path, monkeypatch):
    _repo_with_params(tmp_path, PARAMS)
    (tmp_path / "params.yaml").write_text(PARAMS.replace("0.01,", "0.05,"))
    monkeypatch.setenv("DVC_EXP_NAME", "weest-sech")
    assert provenance.changed_params(tmp_path) == {"models.dense_mlp.train.learning_rate": 0.05}
    assert provenance.run_label("dense_mlp", root=tmp_path) == (
        "dense_mlp learning_rate=0.05 · weest-sech"
    )
    # another preset's change is not this run's: only the experiment names it
    assert provenance.run_label("keras_cnn", root=tmp_path) == "keras_cnn · weest-sech"
    tags = tracking.run_tags("dense_mlp", "numpy", "mnist", root=tmp_path)
    assert tags["mlflow.runName"] == "dense_mlp learning_rate=0.05 · weest-sech"


def test_plain_repro_is_named_by_its_repro_id(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.setenv("PIPELINE_REPRO_ID", "0123456789ab")
    assert provenance.run_label("dense_mlp", root=tmp_path) == "dense_mlp · 0123456"
    monkeypatch.delenv("PIPELINE_REPRO_ID")
    assert provenance.run_label("dense_mlp", root=tmp_path) == "dense_mlp"  # not under dvc


def test_training_run_carries_the_label(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.setenv("PIPELINE_REPRO_ID", "feedbeef0000")
    empty_store(tmp_path)
    tracking.setup("labels", root=tmp_path)
    with tracking.training_run("dense_mlp", "numpy", "mnist", root=tmp_path) as run_id:
        pass
    run = mlflow.get_run(run_id)
    assert run.info.run_name == "dense_mlp · feedbee"
    assert run.data.tags["preset"] == "dense_mlp"
