"""Log a trained model to the active MLflow run in its flavor, with signature and example.

- keras and custom families: ``mlflow.tensorflow.log_model`` (``mlflow.keras.log_model``
  with an input example fails on MLflow 3.17 with Keras 3.15); the custom layers are
  registered with Keras' serialization, and the ``pipeline`` package is shipped beside the
  model (``code_paths``) so that ``mlflow.pyfunc.load_model`` finds them anywhere.
- scratch family: a pyfunc wrapping the ``model.npz`` file.

Requirements are pinned from the installed versions rather than inferred (inference loads
the model again in a subprocess, which costs more than the logging itself).
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
from mlflow.models import infer_signature

PACKAGE_DIR = Path(__file__).resolve().parent
ARTIFACT = "model"


def _pins(*dists: str) -> list[str]:
    return [f"{d}=={version(d)}" for d in dists]


class ScratchModel(mlflow.pyfunc.PythonModel):
    """pyfunc of a scratch (NumPy) network: images (N, 28, 28, 1) -> class probabilities."""

    def load_context(self, context) -> None:
        from pipeline.scratch import family

        self.model = family.load(Path(context.artifacts["model"]).parent)

    def predict(self, context, model_input, params=None):
        from pipeline.scratch import family

        x = np.asarray(model_input, dtype=np.float32)
        return family.predict_proba(self.model, x.reshape(-1, 28, 28, 1))


def log_keras(model, example: np.ndarray) -> None:
    proba = np.asarray(model.predict(example, verbose=0))
    mlflow.tensorflow.log_model(
        model,
        name=ARTIFACT,
        signature=infer_signature(example, proba),
        input_example=example,
        code_paths=[str(PACKAGE_DIR)],
        pip_requirements=_pins("tensorflow-cpu", "keras", "numpy"),
    )


def log_scratch(model_file: Path, example: np.ndarray, proba: np.ndarray) -> None:
    mlflow.pyfunc.log_model(
        name=ARTIFACT,
        python_model=ScratchModel(),
        artifacts={"model": str(model_file)},
        signature=infer_signature(example, proba),
        input_example=example,
        code_paths=[str(PACKAGE_DIR)],
        pip_requirements=_pins("numpy"),
    )
