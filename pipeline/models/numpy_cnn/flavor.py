"""The MLflow pyfunc of a scratch (NumPy) network, logged as models-from-code.

MLflow runs this file itself when it loads the model (``mlflow.pyfunc.load_model``); nothing
in the package imports it, and no pickle of the model class is written. The network is the
logged ``model.npz``, read with ``allow_pickle=False``.
Images (N, 28, 28, 1) or (N, 784) -> class probabilities (N, k).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

from pipeline.models.numpy_cnn.network import Network


class ScratchModel(PythonModel):
    def load_context(self, context) -> None:
        self.net = Network.load(Path(context.artifacts["model"]))

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        x = np.asarray(model_input, dtype=np.float32).reshape(-1, 28, 28, 1)
        return self.net.predict_proba(x)


mlflow.models.set_model(ScratchModel())
