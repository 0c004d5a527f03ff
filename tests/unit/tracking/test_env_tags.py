"""The numeric environment on a real sqlite store: a training run and the registry version
it registers carry the ``env.*`` tags of pipeline/core/numenv.py, and so does plot's run."""

from __future__ import annotations

import mlflow
import mlflow.pyfunc

from pipeline import tracking
from pipeline.core import numenv
from tests.helpers import empty_store


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input):
        return [0] * len(model_input)


def test_training_run_and_registry_version_carry_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("PIPELINE_REPRO_ID", "rep-env")
    empty_store(tmp_path)
    tracking.setup("env-tags", root=tmp_path)
    expected = numenv.as_tags(numenv.probe())
    with tracking.training_run("envmodel", "dense", "digits10", root=tmp_path) as run_id:
        mlflow.pyfunc.log_model(name="model", python_model=Constant())
        version = tracking.register_model("envmodel", "digits10", root=tmp_path)
    client = mlflow.MlflowClient()
    run_tags = client.get_run(run_id).data.tags
    version_tags = client.get_model_version("envmodel", version).tags
    for tags in (run_tags, version_tags):
        assert {k: tags.get(k) for k in expected} == expected
        assert numenv.from_tags(tags)["fingerprint"] == expected["env.fingerprint"]
    compare_tags = tracking.run_tags("compare", root=tmp_path)  # plot's cross-model run
    assert numenv.from_tags(compare_tags)["fingerprint"] == expected["env.fingerprint"]


def test_serving_version_carries_the_environment(tmp_path, monkeypatch):
    """``<preset>-serving`` versions (logged by train@ beside the preset's) are registry
    versions too: the same ``env.*`` tags."""
    from pydantic import TypeAdapter

    from pipeline.core.params import LayerSpec
    from pipeline.models.numpy_cnn.network import Network
    from pipeline.tracking import serving

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    empty_store(tmp_path)
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
        model_dir = tmp_path / "model"
        model_dir.mkdir()
        arch = [{"type": "flatten"}, {"type": "dense", "units": 3, "activation": "softmax"}]
        layers = TypeAdapter(tuple[LayerSpec, ...]).validate_python(arch)
        Network(layers, (28, 28, 1), seed=0).save(model_dir / "model.npz")
        with mlflow.start_run(experiment_id=exp):
            version = serving.log_serving_model("envmodel", model_dir, [0, 1, 2])
        tags = mlflow.MlflowClient().get_model_version("envmodel-serving", version).tags
    finally:
        mlflow.set_tracking_uri(None)
    expected = numenv.as_tags(numenv.probe())
    assert {k: tags.get(k) for k in expected} == expected
