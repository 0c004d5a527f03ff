"""evaluate@<model>: models/<model>/ + the test split -> metrics/<model>.json, plots/<model>/.

Scores the trained model on its dataset's whole test split (the same images for every
model of a dataset), writes the quality figures (no timings: reruns compare byte for byte),
``predictions.csv`` (one row an image, class labels as the dataset names them: 0/2/5 for
digits {0, 2, 5}), ``confusion.csv`` (every actual/predicted pair with its count, zeros
included, so that a class never predicted stays on the axes of DVC's plot), the confusion
matrix in counts and normalized, and the per-model figures; all of it is added to the
model's MLflow run.

``metrics/<model>.json`` keeps the figures people compare across experiments (accuracy,
loss, macro averages); per-class figures go to ``tables/per_class.json`` and to MLflow, so
that ``dvc exp show`` stays a readable table.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import tracking
from pipeline.core import config, runner
from pipeline.core.io import atomic_dir, atomic_write
from pipeline.core.params import Params
from pipeline.data.prepared import load_meta, load_split
from pipeline.models import family as families
from pipeline.report import figures, metrics


def _figures(name, family, model, test, y_pred, names, counts, history, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    figures.save(figures.curves(history, f"{name}: training curves"), out / "curves.png")
    figures.save(
        figures.confusion_heatmap(counts, names, f"{name}: confusion matrix (test)"),
        out / "confusion_matrix.png",
    )
    grid = figures.prediction_grid(test.x, test.y, y_pred, names, f"{name}: test predictions")
    figures.save(grid, out / "predictions_grid.png")
    kernels = family.first_layer_kernels(model)
    if kernels is not None:
        figures.save(figures.kernels(kernels, f"{name}: first-layer kernels"), out / "kernels.png")
        maps = family.feature_maps(model, test.x[:1])[0]  # (H, W, C)
        title = f"{name}: first-layer feature maps"
        figures.save(figures.feature_maps(test.x[0], maps, title), out / "feature_maps.png")


def _tables(out: Path, y_true, y_pred, names: list[str], counts, normalized, per_class) -> None:
    out.mkdir()
    (out / config.PER_CLASS_JSON).write_text(json.dumps(per_class, indent=2, sort_keys=True) + "\n")
    frame = pd.DataFrame(counts, index=names, columns=names).rename_axis("actual")
    frame.to_csv(out / config.CONFUSION_CSV)
    norm = pd.DataFrame(np.round(normalized, 6), index=names, columns=names)
    norm.rename_axis("actual").to_csv(out / config.CONFUSION_NORMALIZED_CSV)
    (out / config.CLASSIFICATION_REPORT).write_text(metrics.report(y_true, y_pred, names))


def run(
    params: Params, name: str, data_dir: Path, model_dir: Path, metrics_path: Path, plots: Path
) -> dict:
    mp = params.models[name]
    family = families.get(mp.family)
    test = load_split(data_dir, "test")
    names = [str(c) for c in load_meta(data_dir)["classes"]]
    model = family.load(model_dir)
    proba = family.predict_proba(model, test.x)  # (N, k)
    y_pred = proba.argmax(axis=1)
    result = metrics.compute(test.y, proba, names)
    counts, normalized = metrics.confusion(test.y, y_pred, len(names))
    history = pd.read_csv(model_dir / config.HISTORY_CSV)

    labels = np.asarray(names)
    per_class = result.pop("per_class")
    with atomic_dir(plots) as tmp:
        predictions = pd.DataFrame({"actual": labels[test.y], "predicted": labels[y_pred]})
        predictions.to_csv(tmp / config.PREDICTIONS_CSV, index=False)
        pairs = pd.DataFrame(
            [
                (names[a], names[p], int(counts[a, p]))
                for a in range(len(names))
                for p in range(len(names))
            ],
            columns=["actual", "predicted", "count"],
        )
        pairs.to_csv(tmp / config.CONFUSION_PLOT_CSV, index=False)
        history.to_csv(tmp / config.HISTORY_CSV, index=False)
        _tables(tmp / config.TABLES_DIR, test.y, y_pred, names, counts, normalized, per_class)
        _figures(name, family, model, test, y_pred, names, counts, history, tmp / config.IMAGES_DIR)
    atomic_write(metrics_path, json.dumps(result, indent=2, sort_keys=True) + "\n")

    tracking.setup(params.mlflow.experiment)
    run_id = tracking.load_run_id(model_dir)
    source = tracking.source_label(model_dir / config.RUN_ID_FILE)
    tags = tracking.run_tags(name, mp.family, mp.dataset)
    with tracking.reopen_or_continue(run_id, source, tags, log=logging.getLogger(__name__).info):
        flat = {f"test_{k}": v for k, v in result.items() if not isinstance(v, dict)}
        for cls, figs in per_class.items():
            flat |= {f"test_{m}_class_{cls}": v for m, v in figs.items() if m != "support"}
        tracking.log_metrics(flat)
        tracking.log_artifacts(plots, artifact_path="evaluation")
        tracking.log_artifact(metrics_path, artifact_path="evaluation")
        tracking.log_images(plots / config.IMAGES_DIR)
        tracking.tag_test_accuracy(name, run_id, result["accuracy"])
    return result | {"per_class": per_class}


def main(argv: list[str] | None = None) -> int:
    def body(params: Params, name: str) -> str:
        ds = params.models[name].dataset
        result = run(
            params,
            name,
            config.prepared_dir(ds),
            config.model_dir(name),
            config.metrics_file(name),
            config.plots_dir(name),
        )
        return f"test accuracy {result['accuracy']:.4f}, macro F1 {result['macro_f1']:.4f}"

    return runner.run_stage("evaluate", body, argv, section="models")


if __name__ == "__main__":
    sys.exit(main())
