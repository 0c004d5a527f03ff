"""The pyfunc loader turns MLflow's pickle switch on only while it loads: no process-wide
side effect is left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline import tracking
from pipeline.tracking.loading import ALLOW_PICKLE_ENV


@pytest.fixture(scope="module")
def pickled_model(tmp_path_factory):
    """A python model saved by MLflow as a cloudpickle (what --trust-pickle is for)."""
    import mlflow

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input: list[str], params=None) -> list[str]:
            return model_input

    path = tmp_path_factory.mktemp("pyfunc") / "model"
    mlflow.pyfunc.save_model(str(path), python_model=Echo(), pip_requirements=[])
    return str(path)


@pytest.mark.parametrize("before", [None, "false"])
def test_the_pickle_switch_is_on_only_during_the_load(pickled_model, monkeypatch, before):
    if before is None:
        monkeypatch.delenv(ALLOW_PICKLE_ENV, raising=False)
    else:
        monkeypatch.setenv(ALLOW_PICKLE_ENV, before)  # the user said no, --trust-pickle yes
    model = tracking.load_pyfunc(pickled_model, trust_pickle=True)
    assert model.predict(["a", "b"]) == ["a", "b"]
    assert os.environ.get(ALLOW_PICKLE_ENV) == before


def test_no_pyfunc_load_without_trust(pickled_model):
    with pytest.raises(tracking.PickleRefused, match="needs --trust-pickle"):
        tracking.load_pyfunc(pickled_model)
    with pytest.raises(tracking.PickleRefused, match="would unpickle code"):
        tracking.safe_model_file(Path(pickled_model))
