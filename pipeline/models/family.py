"""The model-family contract and the registry of ``models.<name>.family``.

A family is a module with the functions of ``ModelFamily`` (the stages, ``predict`` and the
devtools call nothing else); ``get`` maps a ``family:`` name of params.yaml to its module.
Modules are imported on first use, so the scratch family never loads TensorFlow.
tests/unit/models/test_family.py checks every registered module against the Protocol.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from pipeline.core.params import ModelParams
    from pipeline.data.prepared import Split

FAMILIES = {  # family name -> module implementing ModelFamily
    "scratch": "pipeline.models.numpy_cnn.family",
    "keras": "pipeline.models.keras.family",
    "custom": "pipeline.models.keras.family",
    "ensemble": "pipeline.models.ensemble.family",
}
FORMATS = {"keras": "keras", "npz": "scratch", "ensemble": "ensemble"}  # logged file -> family


@runtime_checkable
class ModelFamily(Protocol):
    """What every family module offers. ``model`` is the family's own model object (a
    scratch ``Network``, a ``keras.Model``). A module may add parameters with defaults."""

    def train(
        self,
        mp: ModelParams,
        train: Split,
        val: Split,
        *,
        seed: int,
        out_dir: Path,
        on_epoch: Callable[[dict], None] | None = None,
    ) -> list[dict]:
        """Train ``mp`` on ``train`` (validated on ``val``), save the model in ``out_dir``,
        and return one history row an epoch (each also passed to ``on_epoch``)."""
        ...

    def load(self, out_dir: Path) -> Any:
        """The model ``train`` saved in ``out_dir``."""
        ...

    def load_file(self, path: Path) -> Any:
        """A saved model file (pickle-free: ``.npz`` or ``.keras`` in safe mode)."""
        ...

    def predict_proba(self, model: Any, x: np.ndarray) -> np.ndarray:
        """Class probabilities (N, k) float32 of images ``x`` (N, H, W, C)."""
        ...

    def first_layer_kernels(self, model: Any) -> np.ndarray | None:
        """Kernels (kh, kw, cin, cout) of the first conv layer; None without one."""
        ...

    def feature_maps(self, model: Any, x: np.ndarray) -> np.ndarray | None:
        """Output (N, H, W, C) of the first conv block for ``x``; None without a conv."""
        ...

    def log_model(self, model: Any, out_dir: Path, example: np.ndarray) -> None:
        """Log ``model`` (saved in ``out_dir``) to the active MLflow run, with an input
        example, through ``pipeline.tracking``."""
        ...


def get(family: str) -> ModelFamily:
    """The module of ``family`` (imported now, not before)."""
    try:
        name = FAMILIES[family]
    except KeyError:
        known = ", ".join(FAMILIES)
        raise ValueError(f"unknown model family {family!r} (known: {known})") from None
    return cast(ModelFamily, importlib.import_module(name))


def load_verified(uri: str) -> tuple[ModelFamily, Any]:
    """For scripts: the logged model at ``uri`` (``runs:/<run>/<preset>``,
    ``models:/<preset>@champion``, ``models:/<preset>/<version>``) as ``(family, model)``,
    after every file of it matched the sha256 recorded at logging, loaded from its
    pickle-free file (nothing of the model folder runs, unlike ``mlflow.pyfunc.load_model``).
    ``family.predict_proba(model, x)`` gives class probabilities of (N, 28, 28, 1) images.
    Raises ``tracking.ModelTampered`` (a file differs, naming it) and
    ``tracking.PickleRefused`` (not the project's format)."""
    from pipeline import tracking  # mlflow: imported only by a caller that loads a model

    found = tracking.verified_model_file(uri)
    family = get(FORMATS[found.format])
    return family, family.load_file(found.path)
