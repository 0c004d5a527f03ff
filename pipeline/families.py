"""The model families behind ``models.<name>.family``.

Each family module offers the same functions: ``train(mp, train, val, *, seed, out_dir,
on_epoch)`` -> history rows, ``load(out_dir)``, ``predict_proba(model, x)``,
``first_layer_kernels(model)`` and ``feature_maps(model, x)``; ``log_model`` below logs
the model to MLflow in the family's flavor.
Imports are lazy so that the scratch family never pulls in TensorFlow.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import numpy as np

MODULES = {
    "scratch": "pipeline.scratch.family",
    "keras": "pipeline.models.keras_family",
    "custom": "pipeline.models.keras_family",
}


def get(family: str) -> ModuleType:
    try:
        return importlib.import_module(MODULES[family])
    except KeyError:
        raise ValueError(f"unknown model family {family!r} (known: {', '.join(MODULES)})") from None


def log_model(family: str, model, out_dir: Path, example: np.ndarray) -> None:
    """Log ``model`` (saved in ``out_dir``) to the active MLflow run with an input example."""
    from pipeline import model_logging

    if family == "scratch":
        proba = get(family).predict_proba(model, example)
        model_logging.log_scratch(out_dir / "model.npz", example, proba)
    else:
        model_logging.log_keras(model, example)
