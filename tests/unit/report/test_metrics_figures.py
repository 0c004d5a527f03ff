"""Test metrics against hand-computed values, and the figures on small real data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.report import figures, metrics


def test_metrics_hand_computed():
    y = np.array([0, 0, 1, 1, 2, 2])
    proba = np.array(
        [
            [0.9, 0.05, 0.05],
            [0.2, 0.7, 0.1],
            [0.1, 0.8, 0.1],
            [0.1, 0.6, 0.3],
            [0, 0, 1],
            [0.5, 0, 0.5],
        ]
    )
    # argmax: 0, 1, 1, 1, 2, 0 (ties resolve to the first class)
    m = metrics.compute(y, proba, ["0", "2", "5"])
    assert m["accuracy"] == round(4 / 6, 6)
    assert m["errors"] == 2 and m["n_test"] == 6
    # 95% Wilson interval of 4/6 by hand: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    z, n, p = 1.959964, 6, 4 / 6
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = (((p + z * z / (2 * n)) + d * half) / (1 + z * z / n) for d in (-1, 1))
    assert m["accuracy_ci95_low"] == pytest.approx(low, abs=2e-6)  # 0.299993
    assert m["accuracy_ci95_high"] == pytest.approx(high, abs=2e-6)  # 0.903228
    expected_loss = -np.mean(np.log(np.clip([0.9, 0.2, 0.8, 0.6, 1.0, 0.5], 1e-7, 1)))
    assert m["loss"] == pytest.approx(expected_loss, abs=1e-6)
    # class "2": tp=2, fp=1, fn=0 -> precision 2/3, recall 1
    assert m["per_class"]["2"] == {"precision": 0.666667, "recall": 1.0, "f1": 0.8, "support": 2}
    assert m["per_class"]["0"]["recall"] == 0.5
    f1s = [m["per_class"][c]["f1"] for c in ("0", "2", "5")]
    assert m["macro_f1"] == pytest.approx(np.mean(f1s), abs=1e-6)


def test_metrics_reject_wrong_shape():
    with pytest.raises(ValueError, match=r"probabilities of shape \(3, 2\), expected \(3, 3\)"):
        metrics.compute(np.array([0, 1, 2]), np.ones((3, 2)) / 2, ["a", "b", "c"])


def test_confusion_counts_and_normalized():
    counts, norm = metrics.confusion(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 4)
    assert counts.tolist() == [[2 - 1, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    assert norm[0].tolist() == [0.5, 0.5, 0, 0]
    assert norm[3].tolist() == [0, 0, 0, 0]  # a class with no test image: zeros, not NaN


def _png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("L"))


def test_figures_render(tmp_path):
    rng = np.random.default_rng(0)
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "loss": [1.0, 0.5, 0.3],
            "val_loss": [0.9, 0.6, 0.5],
            "accuracy": [0.6, 0.8, 0.9],
            "val_accuracy": [0.65, 0.78, 0.85],
        }
    )
    images = rng.random((9, 28, 28, 1)).astype(np.float32)
    y_true, y_pred = np.arange(9) % 3, np.array([0, 1, 2, 0, 1, 1, 0, 1, 2])
    names = ["0", "2", "5"]
    made = [
        figures.save(figures.curves(history, "m"), tmp_path / "curves.png"),
        figures.save(
            figures.confusion_heatmap(np.eye(3, dtype=int) * 5, names, "m"), tmp_path / "cm.png"
        ),
        figures.save(figures.kernels(rng.normal(size=(3, 3, 1, 12)), "k"), tmp_path / "k.png"),
        figures.save(
            figures.feature_maps(images[0], rng.random((26, 26, 12)), "f"), tmp_path / "f.png"
        ),
        figures.save(
            figures.prediction_grid(images, y_true, y_pred, names, "g"), tmp_path / "g.png"
        ),
        figures.save(figures.accuracy_bars({"a": 0.99, "b": 0.95}), tmp_path / "acc.png"),
        figures.save(figures.validation_curves({"a": history, "b": history}), tmp_path / "v.png"),
    ]
    for path in made:
        pixels = _png(path)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert pixels.std() > 5, f"{path.name} is blank"


def test_figures_are_deterministic(tmp_path):
    names = ["0", "1"]
    a = figures.save(
        figures.confusion_heatmap(np.array([[3, 1], [0, 4]]), names, "t"), tmp_path / "a.png"
    )
    b = figures.save(
        figures.confusion_heatmap(np.array([[3, 1], [0, 4]]), names, "t"), tmp_path / "b.png"
    )
    assert a.read_bytes() == b.read_bytes()
