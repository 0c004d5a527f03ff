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
that ``dvc exp show`` stays a readable table. The files and figures are made in
pipeline/report/evaluation.py.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import tracking
from pipeline.core import config, numenv, runner
from pipeline.core.params import Params
from pipeline.data.prepared import load_meta, load_split
from pipeline.models import family as families
from pipeline.report import card, evaluation
from pipeline.report.evaluation import Evaluation


def score(params: Params, name: str, data_dir: Path, model_dir: Path) -> Evaluation:
    """Model ``name`` (from ``model_dir``) on the test split of ``data_dir``."""
    family = families.get(params.models[name].family)
    test = load_split(data_dir, "test")
    model = family.load(model_dir)
    kernels = family.first_layer_kernels(model)
    return Evaluation(
        name=name,
        x=test.x,
        y=test.y,
        proba=family.predict_proba(model, test.x),
        classes=[str(c) for c in load_meta(data_dir)["classes"]],
        history=pd.read_csv(model_dir / config.HISTORY_CSV),
        kernels=kernels,
        maps=None if kernels is None else family.feature_maps(model, test.x[:1])[0],
    )


def log_to_run(
    params: Params, name: str, model_dir: Path, ev: Evaluation, metrics_path: Path, plots: Path
) -> None:
    """Add the test figures and the written files to the model's MLflow run (the one whose
    id train@ kept in ``model_dir``) and tag its registered version with its accuracy."""
    mp = params.models[name]
    tracking.setup(params.mlflow.experiment)
    run_id = tracking.load_run_id(model_dir)
    source = tracking.source_label(model_dir / config.RUN_ID_FILE)
    tags = tracking.run_tags(name, mp.family, mp.dataset)
    with tracking.reopen_or_continue(run_id, source, tags, log=logging.getLogger(__name__).info):
        tracking.log_metrics(evaluation.mlflow_metrics(ev))
        tracking.log_params({"dataset.n_test": ev.summary["n_test"]})  # beside n_train, n_val
        tracking.log_artifacts(plots, artifact_path=config.EVALUATION_ARTIFACTS)
        tracking.log_artifact(metrics_path, artifact_path=config.EVALUATION_ARTIFACTS)
        tracking.log_images(plots / config.IMAGES_DIR)
        with tempfile.TemporaryDirectory() as tmp:  # beside the model card (report/card.py)
            labels = np.asarray(ev.classes)
            data = {"dataset": mp.dataset, "source": params.data.source}
            card.write_material(Path(tmp), ev.x, labels[ev.y], labels[ev.pred], data)
            tracking.log_artifacts(Path(tmp), artifact_path=card.CARD_DIR)
        tracking.tag_test_accuracy(name, run_id, ev.summary["accuracy"])


def run(
    params: Params, name: str, data_dir: Path, model_dir: Path, metrics_path: Path, plots: Path
) -> dict:
    """Score, write ``metrics_path`` and ``plots``, log to MLflow; the scores."""
    ev = score(params, name, data_dir, model_dir)
    evaluation.write(ev, plots, metrics_path)
    numenv.write(metrics_path.with_name(f"{name}.env.json"))  # the kernels behind the numbers
    log_to_run(params, name, model_dir, ev, metrics_path, plots)
    return dict(ev.scores)


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
