"""The numeric environment on a real sqlite store: a training run and the registry version
it registers carry the ``env.*`` tags of pipeline/core/numenv.py; plot's run does not."""

from __future__ import annotations

import mlflow
import mlflow.pyfunc

from pipeline import tracking
from pipeline.core import numenv


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input):
        return [0] * len(model_input)


def test_training_run_and_registry_version_carry_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("PIPELINE_REPRO_ID", "rep-env")
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
    assert not numenv.from_tags(tracking.run_tags("compare", root=tmp_path))
