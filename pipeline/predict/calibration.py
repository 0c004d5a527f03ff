"""The unknown-digit threshold of a loaded model, calibrated on its validation split.

The 1st percentile of the model's top probability over the validation images
(``data/prepared/<dataset>/val.npz``) it classifies right, computed once per model file and
split and kept in ``data/cache/predict/``; a fixed default when the split is not here or
does not fit the model."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from pipeline.core import config
from pipeline.predict.loading import LoadedModel, Threshold, _first_line, predict_arrays

# Unknown-digit threshold: this percentile of the top probability over the validation images
# a model classifies right (at most CALIBRATION_IMAGES of them, a fixed sample)...
CALIBRATION_PERCENTILE = 1.0
CALIBRATION_IMAGES = 2000
MIN_CALIBRATION_IMAGES = 100  # fewer right answers than this: the default instead
# ... or, when the model's validation split is not here, this fixed value.
DEFAULT_THRESHOLD = 0.8
CALIBRATION_VERSION = 1  # part of the cache key: bump when the recipe changes


def calibrate(loaded: LoadedModel, root: Path | None = None, say=None) -> Threshold:
    """The model's unknown-digit threshold (also set on ``loaded``): the
    ``CALIBRATION_PERCENTILE``th percentile of its top probability over the validation
    images (``data/prepared/<dataset>/val.npz``, a fixed sample of at most
    ``CALIBRATION_IMAGES``) it classifies right. Kept in ``data/cache/predict/`` under the
    sha256 of the model file and of the split; ``DEFAULT_THRESHOLD`` when the split is not
    here, does not fit the model, or too few images are right. ``say`` gets a progress line
    before a computation."""
    root = Path(root) if root is not None else config.ROOT
    try:
        loaded.threshold = _calibrate(loaded, root, say)
    except Exception as exc:  # an unreadable split, a model that fails on it: still predict
        loaded.threshold = _default(f"calibration failed: {_first_line(exc)}")
    return loaded.threshold


def _ordinal(x: float) -> str:
    n = f"{x:g}"
    if not n.isdigit() or n.endswith(("11", "12", "13")):
        return f"{n}th"
    return n + {"1": "st", "2": "nd", "3": "rd"}.get(n[-1], "th")


def _default(why: str) -> Threshold:
    return Threshold(DEFAULT_THRESHOLD, f"the fixed default ({why})")


def _calibrate(loaded: LoadedModel, root: Path, say) -> Threshold:
    from pipeline.core.io import atomic_write, file_digest

    if not loaded.dataset:
        return _default("the model's dataset is unknown")
    split = config.split_file(config.prepared_dir(loaded.dataset, root), "val")
    try:
        where = split.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        where = str(split)
    if not split.is_file():
        return _default(f"no validation split {where} here to calibrate on")
    cache = None
    if loaded.model_file is not None:
        key = f"v{CALIBRATION_VERSION}-{file_digest(loaded.model_file)[:16]}"
        cache = config.cache_dir(root) / "predict" / f"{key}-{file_digest(split)[:16]}.json"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            kept = json.loads(cache.read_text())
            return Threshold(float(kept["value"]), str(kept["source"]))
    if say is not None:
        say(f"calibrating the unknown-digit threshold on {where} (once for this model)")
    with np.load(split, allow_pickle=False) as f:
        x, y = f["x"], f["y"]
    if len(y) > CALIBRATION_IMAGES:
        keep = np.sort(np.random.default_rng(0).choice(len(y), CALIBRATION_IMAGES, replace=False))
        x, y = x[keep], y[keep]
    proba = predict_arrays(loaded, x)
    if proba.ndim != 2 or len(y) == 0 or proba.shape[1] <= int(y.max()):
        return _default(f"{where} has labels the model's {proba.shape[-1]} outputs do not cover")
    right = proba.argmax(axis=1) == y
    if int(right.sum()) < MIN_CALIBRATION_IMAGES:
        return _default(f"only {int(right.sum())} of {len(y)} images of {where} classified right")
    value = float(np.percentile(proba.max(axis=1)[right], CALIBRATION_PERCENTILE))
    threshold = Threshold(
        round(value, 6),
        f"the {_ordinal(CALIBRATION_PERCENTILE)} percentile of its top probability over the "
        f"{int(right.sum())} images of {where} it classifies right",
    )
    if cache is not None:
        with contextlib.suppress(OSError):
            atomic_write(cache, json.dumps(threshold.to_json(), indent=2) + "\n")
    return threshold
