"""The serving flavor: the pyfunc of ``<preset>-serving``, logged as models-from-code by
``pipeline.tracking.serving.log_serving_model`` (train@ calls it).

MLflow runs this file itself when it loads the model; nothing of the package imports it and
no pickle of the class is written. Like the two model flavors (models/keras/flavor.py,
models/numpy_cnn/flavor.py) it is model code that MLflow runs, so it imports mlflow itself;
it lives here, above models/, predict/ and tracking/, because it uses all three.

It takes raw pictures and does all of the inference:
column ``image`` (the bytes of PNG/JPEG files; base64 text in JSON) -> per picture ``digit``,
``probability`` and ``probabilities`` (digit -> probability), the fields of
``python -m pipeline.predict --json``, through ``pipeline.predict.preprocess`` (the one
implementation). With ``params={"return_image": true}`` a column ``image28`` adds the
28x28 picture the model saw (784 grey levels in [0, 1], row by row).
The network is the logged ``model.keras`` (Keras safe mode) or ``model.npz``
(``allow_pickle=False``), or an ensemble's ``model`` folder of those, loaded by its family's
``load_file``.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

MAX_PICTURE_BYTES = 4_000_000  # one picture file; larger ones are refused before decoding


class PictureError(MlflowException):
    """A picture that cannot be read: HTTP 400 from MLflow's scoring server, one line."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


def picture_bytes(value, i: int) -> bytes:
    """The file bytes of picture ``i`` (bytes, or base64 text from in-process callers)."""
    if isinstance(value, str):
        try:
            value = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise PictureError(f"image {i}: not base64 text") from None
    if not isinstance(value, bytes | bytearray):
        raise PictureError(f"image {i}: expected the bytes of a PNG/JPEG file")
    if len(value) > MAX_PICTURE_BYTES:
        raise PictureError(f"image {i}: {len(value)} bytes (limit {MAX_PICTURE_BYTES})")
    return bytes(value)


class DigitServing(PythonModel):
    def load_context(self, context) -> None:
        from pipeline.models import family as families

        path = Path(context.artifacts["model"])
        self.keras = path.suffix == ".keras"
        if path.is_dir():  # an ensemble: ensemble.json and its members' files
            self.family, path = families.get("ensemble"), path / "ensemble.json"
        else:
            self.family = families.get("keras" if self.keras else "scratch")
        self.model = self.family.load_file(path)
        self.classes = [int(c) for c in json.loads(Path(context.artifacts["classes"]).read_text())]
        self.proba(np.zeros((1, 28, 28, 1), np.float32))  # warm-up: first call traces

    def proba(self, x: np.ndarray) -> np.ndarray:
        """(N, 28, 28, 1) -> (N, k) float64. Keras: ``predict_on_batch``, not ``predict``
        (which costs ~165 ms of set-up per call, 100x one picture's inference)."""
        if self.keras:
            return np.asarray(self.model.predict_on_batch(x), dtype=np.float64)
        return np.asarray(self.family.predict_proba(self.model, x), dtype=np.float64)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from pipeline.predict.preprocess import ImageError, load_image_bytes, to_mnist

        if not isinstance(model_input, pd.DataFrame) or "image" not in model_input.columns:
            raise PictureError("the input needs a column named 'image' (PNG/JPEG bytes)")
        if len(model_input) == 0:
            raise PictureError("no pictures in the input")
        arrays = []
        for i, value in enumerate(model_input["image"]):
            try:
                arrays.append(to_mnist(load_image_bytes(picture_bytes(value, i))))
            except ImageError as exc:
                raise PictureError(f"image {i}: {exc}") from None
        x = np.stack(arrays).astype(np.float32)
        p = self.proba(x)
        k = p.argmax(axis=1)
        out = pd.DataFrame(
            {
                "digit": [self.classes[j] for j in k],
                "probability": p[np.arange(len(k)), k],
                "probabilities": [
                    {str(d): float(v) for d, v in zip(self.classes, row, strict=True)} for row in p
                ],
            }
        )
        if (params or {}).get("return_image"):
            out["image28"] = [np.round(a.ravel(), 3).tolist() for a in x]
        return out


mlflow.models.set_model(DigitServing())
