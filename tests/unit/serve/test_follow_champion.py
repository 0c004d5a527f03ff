"""``<preset>-serving@champion`` follows ``<preset>@champion`` (tracking/serving.py), and
``best_served_preset`` picks by the champions' test accuracy: a real sqlite store, scratch
(NumPy) serving models, no TensorFlow."""

from __future__ import annotations

import contextlib
import json

import mlflow
import pytest
from pydantic import TypeAdapter

from pipeline.core.params import LayerSpec
from pipeline.models.numpy_cnn.network import Network
from pipeline.tracking import serving
from tests.helpers import empty_store

ARCH = [{"type": "flatten"}, {"type": "dense", "units": 3, "activation": "softmax"}]


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    empty_store(tmp_path)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    arch = TypeAdapter(tuple[LayerSpec, ...]).validate_python(ARCH)
    Network(arch, (28, 28, 1), seed=0).save(model_dir / "model.npz")
    yield exp, model_dir
    mlflow.set_tracking_uri(None)


def train(exp: str, model_dir, preset: str, accuracy: float) -> tuple[str, str]:
    """What train@ and evaluate@ leave: a plain version of ``preset`` (tagged) and a serving
    version, from one run; (plain version, serving version)."""
    client = mlflow.MlflowClient()
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_text(json.dumps({}), "model/placeholder.json")
        served = serving.log_serving_model(preset, model_dir, [0, 2, 5])
    with contextlib.suppress(mlflow.exceptions.MlflowException):  # the second time
        client.create_registered_model(preset)
    mv = client.create_model_version(preset, f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_model_version_tag(preset, mv.version, "test_accuracy", str(accuracy))
    return str(mv.version), served


def test_serving_champion_moves_with_the_preset_champion(store):
    exp, model_dir = store
    client = mlflow.MlflowClient()
    plain1, served1 = train(exp, model_dir, "a", 0.9)
    plain2, served2 = train(exp, model_dir, "a", 0.95)
    assert serving.follow_champion(client, "a") is None  # no champion yet
    client.set_registered_model_alias("a", "champion", plain1)
    assert serving.follow_champion(client, "a") == served1
    client.set_registered_model_alias("a", "champion", plain2)
    assert serving.follow_champion(client, "a") == served2
    assert serving.champion_version("a-serving") == served2
    plain_b, _ = train(exp, model_dir, "b", 0.97)
    assert serving.best_served_preset() == "a"  # b has no serving champion yet
    client.set_registered_model_alias("b", "champion", plain_b)
    serving.follow_champion(client, "b")
    assert serving.best_served_preset() == "b"


def test_no_serving_model_is_one_clear_error(store):
    with pytest.raises(serving.ServingError, match="no <preset>-serving@champion"):
        serving.best_served_preset()
    with pytest.raises(serving.ServingError, match="x-serving@champion: not in the store"):
        serving.champion_version("x-serving")
