"""Logging a trained model to the active run, in its flavor, with a signature, an input
example and the ``pipeline`` package beside it (``code_paths``), without pickles."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
from mlflow.models import infer_signature

from pipeline.tracking import digests
from pipeline.tracking.loading import SAFE_FORMAT_KEY

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the whole pipeline package
MODEL_ARTIFACT = "model"


def model_name() -> str:
    """The name of the model logged to the active run: its preset (``runs:/<id>/<preset>``)."""
    run = mlflow.active_run()
    return (run.data.tags.get("preset") if run else None) or MODEL_ARTIFACT


def _pins(*dists: str) -> list[str]:
    return [f"{d}=={version(d)}" for d in dists]


@contextmanager
def _no_global_custom_objects() -> Iterator[None]:
    """Hide Keras' registry of custom objects while MLflow saves a model: MLflow cloudpickles
    whatever it holds into ``global_custom_objects.cloudpickle``, which would run code when
    loaded. The ``.keras`` file names each custom layer by its registered import path, which
    is how ``load_model_file`` resolves it."""
    import keras

    registry = keras.saving.get_custom_objects()
    saved = dict(registry)
    registry.clear()
    try:
        yield
    finally:
        registry.update(saved)


class _KerasFlavor:
    """``mlflow.tensorflow`` that names ``keras_module`` as the model's Keras module: MLflow's
    own loaders import it and call its ``models.load_model``, where ``tensorflow.keras`` (the
    default) finds no custom layer the loading process has not imported itself."""

    def __init__(self, keras_module: str):
        self.keras_module = keras_module

    def save_model(self, path, mlflow_model, **kwargs) -> None:
        mlflow.tensorflow.save_model(path=path, mlflow_model=mlflow_model, **kwargs)
        conf = mlflow_model.flavors["tensorflow"]
        data = Path(path) / conf["data"]
        (data / "keras_module.txt").write_text(self.keras_module)  # read by mlflow.pyfunc
        conf["keras_module"] = self.keras_module  # read by mlflow.tensorflow.load_model
        mlflow_model.save(str(Path(path) / "MLmodel"))


def log_keras_model(model, example: np.ndarray, keras_module: str) -> None:
    """Log a Keras model to the active run (tensorflow flavor, ``data/model.keras``), with no
    pickle of custom objects; MLflow's loaders load it through ``keras_module`` (a module of
    the ``pipeline`` package, which is logged with the model). The sha256 of every file it
    logged is recorded (digests.py)."""
    from mlflow.models import Model

    proba = np.asarray(model.predict(example, verbose=0))
    with _no_global_custom_objects():
        info = Model.log(
            artifact_path=None,
            name=model_name(),
            flavor=_KerasFlavor(keras_module),
            flavor_name="mlflow.tensorflow",
            model=model,
            signature=infer_signature(example, proba),
            input_example=example,
            code_paths=[str(PACKAGE_DIR)],
            pip_requirements=_pins("tensorflow-cpu", "keras", "numpy"),
            metadata={SAFE_FORMAT_KEY: "keras"},
        )
    digests.record(info)


def log_pyfunc_model(
    code_file: Path,
    artifacts: dict[str, Path],
    example: np.ndarray,
    proba: np.ndarray,
    fmt: str = "npz",
    pins: tuple[str, ...] = ("numpy",),
) -> None:
    """Log a pyfunc model defined in ``code_file`` (models-from-code: no pickle of the class)
    with its ``artifacts`` to the active run; the sha256 of every file is recorded."""
    info = mlflow.pyfunc.log_model(
        name=model_name(),
        python_model=str(code_file),
        artifacts={k: str(v) for k, v in artifacts.items()},
        signature=infer_signature(example, proba),
        input_example=example,
        code_paths=[str(PACKAGE_DIR)],
        pip_requirements=_pins(*pins),
        metadata={SAFE_FORMAT_KEY: fmt},  # "npz", or "ensemble" (loading.safe_model_file)
    )
    digests.record(info)
