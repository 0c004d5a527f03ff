"""The files evaluate@<model> writes from an Evaluation (pipeline/report/evaluation.py), on
small hand-made scores: their content, and the same bytes on a second write."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.core import config
from pipeline.report.evaluation import Evaluation, mlflow_metrics, write
from tests.helpers import tree

HISTORY = pd.DataFrame(
    {
        "epoch": [1, 2],
        "loss": [1.0, 0.5],
        "val_loss": [0.9, 0.6],
        "accuracy": [0.6, 0.8],
        "val_accuracy": [0.65, 0.78],
    }
)


def _evaluation(conv: bool) -> Evaluation:
    rng = np.random.default_rng(0)
    y = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2])
    pred = np.array([0, 1, 1, 1, 1, 1, 0, 1, 1])  # class "5" (index 2) never predicted
    proba = np.full((len(y), 3), 0.1)
    proba[np.arange(len(y)), pred] = 0.8
    return Evaluation(
        name="m",
        x=rng.random((9, 8, 8, 1)).astype(np.float32),
        y=y,
        proba=proba,
        classes=["0", "2", "5"],
        history=HISTORY,
        kernels=rng.normal(size=(3, 3, 1, 4)) if conv else None,
        maps=rng.random((6, 6, 4)) if conv else None,
    )


def test_scores_and_mlflow_metrics():
    ev = _evaluation(conv=False)
    assert ev.pred.tolist() == [0, 1, 1, 1, 1, 1, 0, 1, 1]
    assert ev.summary["accuracy"] == round(5 / 9, 6) and "per_class" not in ev.summary
    assert ev.per_class["5"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 3}
    flat = mlflow_metrics(ev)
    assert flat["test_accuracy"] == ev.summary["accuracy"]
    assert flat["test_recall_class_2"] == 1.0
    assert not any("support" in k or "per_class" in k for k in flat)


@pytest.mark.parametrize("conv", [False, True])
def test_write_files_and_same_bytes_twice(tmp_path, conv):
    ev = _evaluation(conv)
    write(ev, tmp_path / "plots", tmp_path / "metrics.json")
    first = tree(tmp_path / "plots") | {"metrics.json": (tmp_path / "metrics.json").read_bytes()}

    assert json.loads(first["metrics.json"]) == ev.summary
    assert first[config.PREDICTIONS_CSV].decode().splitlines()[:3] == [
        "actual,predicted",
        "0,0",
        "0,2",
    ]
    pairs = first[config.CONFUSION_PLOT_CSV].decode().splitlines()
    assert pairs[0] == "actual,predicted,count" and len(pairs) == 1 + 9
    assert "5,5,0" in pairs  # a class never predicted keeps its zero-count pairs
    assert first[config.HISTORY_CSV].decode().startswith("epoch,loss,val_loss")
    tables = f"{config.TABLES_DIR}/"
    per_class = json.loads(first[tables + config.PER_CLASS_JSON])
    assert per_class == ev.per_class
    assert first[tables + config.CONFUSION_CSV].decode().splitlines()[1] == "0,2,1,0"
    images = {k.split("/")[1] for k in first if k.startswith(f"{config.IMAGES_DIR}/")}
    drawn = {"curves.png", "confusion_matrix.png", "predictions_grid.png"}
    assert images == drawn | ({"kernels.png", "feature_maps.png"} if conv else set())

    write(ev, tmp_path / "plots", tmp_path / "metrics.json")
    again = tree(tmp_path / "plots") | {"metrics.json": (tmp_path / "metrics.json").read_bytes()}
    assert again == first
