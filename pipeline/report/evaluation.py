"""One model's evaluation on its test split and the files evaluate@<model> writes from it.

:class:`Evaluation` carries what scoring produced; :func:`write` turns it into
``metrics/<model>.json`` and ``plots/<model>/`` (byte for byte the same on a rerun: no
timings), :func:`mlflow_metrics` into the metrics of the model's MLflow run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import config
from pipeline.core.io import atomic_dir, atomic_write
from pipeline.report import figures, metrics


@dataclass(frozen=True, eq=False)
class Evaluation:
    """A model scored on its dataset's whole test split."""

    name: str  # the model, in figure titles
    x: np.ndarray  # test images (N, H, W, 1)
    y: np.ndarray  # actual classes (N,) in 0..k-1
    proba: np.ndarray  # predicted probabilities (N, k)
    classes: list[str]  # class labels as the dataset names them (0/2/5 for digits025)
    history: pd.DataFrame  # models/<model>/history.csv
    kernels: np.ndarray | None = None  # first-layer kernels (kh, kw, cin, cout); None: no conv
    maps: np.ndarray | None = None  # first-layer feature maps of x[0], (H, W, C)

    @cached_property
    def pred(self) -> np.ndarray:
        return self.proba.argmax(axis=1)  # (N,)

    @cached_property
    def scores(self) -> dict:
        """:func:`metrics.compute`: accuracy, loss, macro averages and ``per_class``."""
        return metrics.compute(self.y, self.proba, self.classes)

    @property
    def summary(self) -> dict:
        """The figures of ``metrics/<model>.json``: every score but ``per_class``."""
        return {k: v for k, v in self.scores.items() if k != "per_class"}

    @property
    def per_class(self) -> dict[str, dict]:
        return self.scores["per_class"]

    @cached_property
    def confusion(self) -> tuple[np.ndarray, np.ndarray]:
        """Counts (rows: actual, columns: predicted) and the row-normalized matrix."""
        return metrics.confusion(self.y, self.pred, len(self.classes))


def mlflow_metrics(ev: Evaluation) -> dict[str, float]:
    """``test_<figure>`` and ``test_<figure>_class_<label>`` (support and the count of test
    images left out: evaluate@ logs that as param ``dataset.n_test``)."""
    flat = {
        f"test_{k}": v for k, v in ev.summary.items() if not isinstance(v, dict) and k != "n_test"
    }
    for cls, figs in ev.per_class.items():
        flat |= {f"test_{m}_class_{cls}": v for m, v in figs.items() if m != "support"}
    return flat


def predictions(ev: Evaluation) -> pd.DataFrame:
    """One row an image: actual and predicted class labels."""
    labels = np.asarray(ev.classes)
    return pd.DataFrame({"actual": labels[ev.y], "predicted": labels[ev.pred]})


def confusion_pairs(ev: Evaluation) -> pd.DataFrame:
    """Every actual/predicted pair with its count, zeros included, so that a class never
    predicted stays on the axes of DVC's plot."""
    counts, names = ev.confusion[0], ev.classes
    rows = [(a, p, int(counts[i, j])) for i, a in enumerate(names) for j, p in enumerate(names)]
    return pd.DataFrame(rows, columns=["actual", "predicted", "count"])


def write_tables(ev: Evaluation, out: Path) -> None:
    """``per_class.json``, the confusion matrix in counts and normalized, and scikit-learn's
    classification report."""
    out.mkdir()
    text = json.dumps(ev.per_class, indent=2, sort_keys=True) + "\n"
    (out / config.PER_CLASS_JSON).write_text(text)
    counts, normalized = ev.confusion
    names = ev.classes
    frame = pd.DataFrame(counts, index=names, columns=names).rename_axis("actual")
    frame.to_csv(out / config.CONFUSION_CSV)
    norm = pd.DataFrame(np.round(normalized, 6), index=names, columns=names)
    norm.rename_axis("actual").to_csv(out / config.CONFUSION_NORMALIZED_CSV)
    (out / config.CLASSIFICATION_REPORT).write_text(metrics.report(ev.y, ev.pred, names))


def draw(ev: Evaluation, out: Path) -> None:
    """The per-model figures: training curves, confusion matrix, the test mistakes
    (``predictions_grid.png``) and, for a model whose first layer is a convolution, its kernels
    and feature maps."""
    out.mkdir(parents=True, exist_ok=True)
    name = ev.name
    figures.save(figures.curves(ev.history, f"{name}: training curves"), out / "curves.png")
    figures.save(
        figures.confusion_heatmap(ev.confusion[0], ev.classes, f"{name}: confusion matrix (test)"),
        out / "confusion_matrix.png",
    )
    grid = figures.mistakes_grid(ev.x, ev.y, ev.pred, ev.classes, f"{name}: test mistakes")
    figures.save(grid, out / "predictions_grid.png")
    if ev.kernels is not None:
        title = f"{name}: first-layer kernels"
        figures.save(figures.kernels(ev.kernels, title), out / "kernels.png")
    if ev.maps is not None:
        title = f"{name}: first-layer feature maps"
        figures.save(figures.feature_maps(ev.x[0], ev.maps, title), out / "feature_maps.png")


def write(ev: Evaluation, plots: Path, metrics_path: Path) -> None:
    """Replace ``plots`` (plots/<model>/) atomically, then write ``metrics_path``."""
    with atomic_dir(plots) as tmp:
        predictions(ev).to_csv(tmp / config.PREDICTIONS_CSV, index=False)
        confusion_pairs(ev).to_csv(tmp / config.CONFUSION_PLOT_CSV, index=False)
        ev.history.to_csv(tmp / config.HISTORY_CSV, index=False)
        write_tables(ev, tmp / config.TABLES_DIR)
        draw(ev, tmp / config.IMAGES_DIR)
    atomic_write(metrics_path, json.dumps(ev.summary, indent=2, sort_keys=True) + "\n")
