"""The model families behind ``models.<name>.family``.

Every family module offers the same functions: ``train(mp, train, val, *, seed, out_dir,
on_epoch)`` -> history rows, ``load(out_dir)``, ``predict_proba(model, x)``,
``first_layer_kernels(model)``, ``feature_maps(model, x)`` and ``log_model(model, out_dir,
example)`` (to the active MLflow run, through ``pipeline.tracking``).
Imports are lazy so that the scratch family never pulls in TensorFlow.
"""

from __future__ import annotations

import importlib
from types import ModuleType

FAMILIES = {
    "scratch": "pipeline.models.numpy_cnn.family",
    "keras": "pipeline.models.keras.family",
    "custom": "pipeline.models.keras.family",
}


def get(family: str) -> ModuleType:
    """The module of ``family``."""
    try:
        return importlib.import_module(FAMILIES[family])
    except KeyError:
        known = ", ".join(FAMILIES)
        raise ValueError(f"unknown model family {family!r} (known: {known})") from None
