"""The MLflow pyfunc of an ensemble, logged as models-from-code.

MLflow runs this file itself when it loads the model (``mlflow.pyfunc.load_model``); nothing
in the package imports it, and no pickle is written. The ensemble is the logged ``model``
folder (``ensemble.json`` and the members' ``.keras``/``.npz`` files), read by
``pipeline.models.ensemble.family.load_file`` (each member file checked against its sha256).
Images (N, 28, 28, 1) or (N, 784) -> class probabilities (N, k).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

from pipeline.models.ensemble import family


class EnsembleModel(PythonModel):
    def load_context(self, context) -> None:
        self.ensemble = family.load_file(Path(context.artifacts["model"]) / "ensemble.json")

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        x = np.asarray(model_input, dtype=np.float32).reshape(-1, 28, 28, 1)
        return family.predict_proba(self.ensemble, x)


mlflow.models.set_model(EnsembleModel())
