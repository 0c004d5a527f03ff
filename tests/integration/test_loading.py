"""Loading a model never runs code from its files: a planted pickle stays unread unless the
user trusts it, a corrupt or truncated model file is named in one line, and MLflow's own
loaders load the custom-layer models in any process.

The tests that need logged models work on a private copy of the shared tiny project
(conftest.py).
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.core import config
from pipeline.core.io import BadModelFile
from pipeline.predict import cli as predict
from tests.helpers import copy_tiny, plain_env, sh


class Payload:
    """Unpickling this creates ``marker``: what a hostile model file would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def plant(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(Payload(marker)))


def logged_model_folders(project: Path, run_id: str) -> list[Path]:
    """The store's folders of the model logged by ``run_id`` (not its servable)."""
    found = []
    for mlmodel in sorted((project / "mlartifacts").rglob("MLmodel")):
        conf = yaml.safe_load(mlmodel.read_text()) or {}
        if conf.get("run_id") == run_id and conf.get("name") != "serving":
            found.append(mlmodel.parent)
    assert found, f"no logged model of run {run_id} in {project}"
    return found


def logged_model_folder(project: Path, run_id: str) -> Path:
    """The store's own folder of the model logged by ``run_id`` (what runs:/ resolves to)."""
    return logged_model_folders(project, run_id)[0]


@pytest.fixture(scope="module")
def project(tiny_built, tmp_path_factory) -> Path:
    """A private copy of the tiny project: these tests plant files in its store."""
    return copy_tiny(tiny_built, tmp_path_factory.mktemp("loading") / "p")


@pytest.fixture
def store(project, monkeypatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    return project


def one_picture(folder: Path) -> Path:
    """A picture of a 1: a black bar on white."""
    from PIL import Image

    a = np.full((60, 60), 255, np.uint8)
    a[10:50, 28:33] = 0
    Image.fromarray(a).save(folder / "one.png")
    return folder / "one.png"


@pytest.mark.slow
def test_keras_model_with_planted_cloudpickle_loads_without_running_it(store, tmp_path):
    marker = tmp_path / "keras-payload-ran"
    run_id = (store / "models" / "keras_small_cnn" / config.RUN_ID_FILE).read_text().strip()
    # every stored copy of the Keras model that holds its data/ folder (the flavor's files)
    folders = [f for f in logged_model_folders(store, run_id) if (f / "data").is_dir()]
    assert folders, "no stored copy of the Keras model with a data/ folder"
    for folder in folders:
        assert not list(folder.rglob("*.cloudpickle"))  # logged without any pickle
        for name in ("global_custom_objects.cloudpickle", "custom_objects.cloudpickle"):
            plant(folder / "data" / name, marker)

    # The project's loader checks the files against the sha256 list logged with the model
    # before anything of them is read: the planted files are named and refused.
    with pytest.raises(predict.ModelError, match=r"custom_objects\.cloudpickle"):
        predict.load_uri(f"runs:/{run_id}/keras_small_cnn")  # named after the preset
    assert not marker.exists()

    # The payload is live: MLflow's own loader, allowed to unpickle, runs it.
    import mlflow

    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
    try:
        mlflow.tensorflow.load_model(str(folder))
    finally:
        del os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"]
    assert marker.exists()


_MLFLOW_LOAD = """
import sys, mlflow, numpy as np
x = np.zeros((2, 28, 28, 1), np.float32)
for name in ("custom_cnn", "keras_cnn"):
    proba = np.asarray(mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(x))
    print(name, "pyfunc:", proba.shape, bool(np.allclose(proba.sum(axis=1), 1, atol=1e-4)))
model = mlflow.tensorflow.load_model("models:/custom_cnn@champion")
print("custom_cnn tensorflow:", type(model).__name__, model.count_params())
print("custom layers from the model's code:",
      sys.modules["pipeline.models.keras.layers"].__file__.endswith(
          "/code/pipeline/models/keras/layers.py"))
"""


@pytest.mark.slow
def test_custom_layer_models_load_through_mlflow_in_any_process(project):
    """MLflow's own loaders, in a fresh process outside the project that imported nothing of
    it: models with custom layers load (the logged keras_module passes them to Keras, from
    the code logged with the model) and predict; their logging warned of nothing."""
    env = plain_env(MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}")
    out = sh([str(project / ".venv" / "bin" / "python"), "-c", _MLFLOW_LOAD], Path("/"), env)
    said = out.stdout + out.stderr[-3000:]
    assert "custom_cnn pyfunc: (2, 10) True" in out.stdout, said
    assert "keras_cnn pyfunc: (2, 10) True" in out.stdout, said
    assert "custom_cnn tensorflow: Functional" in out.stdout, said
    assert "custom layers from the model's code: True" in out.stdout, said
    # MLflow checks the input example by loading the model as it is logged: it passed
    assert "Failed to validate serving input example" not in (project / ".repro.log").read_text()


@pytest.mark.slow
def test_scratch_model_needing_unpickling_is_refused_unless_trusted(store, tmp_path, capsys):
    marker = tmp_path / "scratch-payload-ran"
    run_id = (store / "models" / "scratch_cnn" / config.RUN_ID_FILE).read_text().strip()
    folder = logged_model_folder(store, run_id)
    assert not list(folder.rglob("python_model.pkl"))  # models-from-code: no pickle

    # A model folder: a planted python_model.pkl beside the .npz is never read.
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    plant(copy / "python_model.pkl", marker)
    loaded = predict.load_uri(str(copy))
    assert predict.predict_files(loaded, [one_picture(tmp_path)])[0]
    assert not marker.exists()

    # The store's model rewritten to load through its pickle (every stored copy of it, the
    # run's and the logged model's): refused, in one line.
    for copy_of_it in logged_model_folders(store, run_id):
        conf = yaml.safe_load((copy_of_it / "MLmodel").read_text())
        pf = conf["flavors"]["python_function"]
        pf.pop("model_code_path")
        pf.pop("artifacts")
        pf |= {"loader_module": "mlflow.pyfunc.model", "python_model": "python_model.pkl"}
        (copy_of_it / "MLmodel").write_text(yaml.safe_dump(conf))
        plant(copy_of_it / "python_model.pkl", marker)
    uri = f"runs:/{run_id}/scratch_cnn"  # the logged model is named after the preset
    assert predict.main(["--model", uri, str(one_picture(tmp_path))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # refused in one line before loading: the rewritten MLmodel no longer matches its digest
    assert len(err) == 1 and "MLmodel" in err[0] and "refused" in err[0], err
    assert not marker.exists()
    # even --trust-pickle does not load files that differ from what was logged
    with pytest.raises(predict.ModelError):
        predict.load_uri(uri, trust_pickle=True)
    assert not marker.exists()


def test_npz_with_a_pickled_object_array_is_refused(tmp_path):
    from pipeline.models.numpy_cnn.network import Network

    marker = tmp_path / "npz-payload-ran"
    arr = np.empty(1, dtype=object)
    arr[0] = Payload(marker)
    np.savez(tmp_path / "model.npz", evil=arr, __arch__=np.array("[]"))
    with pytest.raises(BadModelFile, match=r"model\.npz: corrupt or not a model"):
        Network.load(tmp_path / "model.npz")
    assert not marker.exists()


@pytest.mark.slow
def test_truncated_keras_file_is_reported_as_corrupt(tiny_built, tmp_path):
    from pipeline.models.keras import family

    src = tiny_built / "models" / "keras_small_cnn" / "model.keras"
    bad = tmp_path / "model.keras"
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(BadModelFile, match=r"corrupt or truncated \.keras file"):
        family.load_file(bad)
