"""Stages that meet MLflow runs absent from the current store (models pulled from a DVC
remote) log to a run of their own; against a real sqlite store."""

from __future__ import annotations

import pytest

from pipeline import tracking
from tests.helpers import empty_store


@pytest.fixture
def store(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    empty_store(tmp_path)
    exp = tracking.setup("pulled", root=tmp_path)
    yield mlflow.MlflowClient(), exp
    mlflow.end_run()


def test_an_existing_run_is_reopened(store):
    import mlflow

    client, _ = store
    with mlflow.start_run() as run:
        pass
    said = []
    with tracking.reopen_or_continue(
        run.info.run_id, "models/m/mlflow_run_id", log=said.append
    ) as rid:
        tracking.log_metrics({"test_accuracy": 0.5})
    assert rid == run.info.run_id and said == []
    assert client.get_run(rid).data.metrics["test_accuracy"] == 0.5


def test_an_absent_run_gets_a_run_of_its_own_and_one_line(store):
    client, exp = store
    absent = "0123456789abcdef0123456789abcdef"
    assert not tracking.run_exists(absent)
    said = []
    tags = {"preset": "dense_mlp", "mlflow.runName": "dense_mlp"}
    with tracking.reopen_or_continue(
        absent, "models/dense_mlp/mlflow_run_id", tags, said.append
    ) as rid:
        tracking.log_metrics({"test_accuracy": 0.9})
    assert rid != absent
    assert len(said) == 1 and "\n" not in said[0]
    assert absent in said[0] and rid in said[0] and "not in this store" in said[0]
    run = client.get_run(rid)
    assert run.data.tags["source_run_id"] == absent
    assert run.data.tags["source"] == "models/dense_mlp/mlflow_run_id"
    assert run.data.tags["source_store"].startswith("sqlite:///")
    assert run.data.tags["preset"] == "dense_mlp"
    assert run.data.metrics["test_accuracy"] == 0.9
    assert run.info.status == "FINISHED" and run.info.experiment_id == exp


def test_a_deleted_run_counts_as_absent(store):
    import mlflow

    client, _ = store
    with mlflow.start_run() as run:
        pass
    client.delete_run(run.info.run_id)
    assert not tracking.run_exists(run.info.run_id)


def test_the_source_label_names_the_dvc_output(tmp_path):
    (tmp_path / "models" / "m").mkdir(parents=True)
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  train@m:\n    cmd: x\n    outs:\n"
        "    - path: models/m\n      md5: abc.dir\n"
    )
    label = tracking.source_label(tmp_path / "models" / "m" / "mlflow_run_id", root=tmp_path)
    assert label == "models/m/mlflow_run_id, DVC output models/m md5 abc.dir"
    assert tracking.source_label(tmp_path.parent / "x", root=tmp_path) == str(tmp_path.parent / "x")
