"""plot: metrics/*.json + models/*/history.csv -> plots/compare/.

Cross-model figures: the test accuracy of every model, and the validation loss and
accuracy over epochs of the models in ``plot.compare_curves`` (cubic_mlp vs dense_mlp).
The per-model figures are drawn by evaluate@<model> into plots/<model>/, so a change to one
model redraws only its own.

The figures go to an MLflow run of their own, one per execution of this stage, tagged
``run_kind=compare`` and with the ``repro_id`` its models' training runs share; the runs
of the models it shows are listed in its params (``run.<model>``). Finished training runs
are never rewritten: an experiment that retrains one model leaves every other model's run
as it was, and each comparison stays the one drawn at its time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from pipeline import tracking
from pipeline.core import config, runner
from pipeline.core.io import atomic_dir
from pipeline.core.params import Params
from pipeline.report import figures

COMPARE_RUN = "compare"  # the run's name, its run_kind tag and its artifact folder


def run(params: Params, root: Path, out_dir: Path) -> dict[str, float]:
    accuracy = {}
    for name in params.models:
        path = config.metrics_file(name, root)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; run `dvc repro evaluate@{name}` first")
        accuracy[name] = json.loads(path.read_text())["accuracy"]
    histories = {
        name: pd.read_csv(config.model_dir(name, root) / config.HISTORY_CSV)
        for name in params.plot.compare_curves
    }
    with atomic_dir(out_dir) as tmp:
        figures.save(figures.accuracy_bars(accuracy), tmp / config.ACCURACY_PNG)
        table = pd.Series(accuracy, name="accuracy").rename_axis("model")
        table.to_csv(tmp / config.ACCURACY_CSV)
        if histories:
            figures.save(figures.validation_curves(histories), tmp / config.CURVES_PNG)

    tracking.setup(params.mlflow.experiment)
    runs = {n: tracking.load_run_id(config.model_dir(n, root)) for n in params.models}
    with tracking.execution_run(COMPARE_RUN, tracking.run_tags(COMPARE_RUN, root=root)):
        tracking.log_params({f"run.{n}": run_id for n, run_id in runs.items()})
        tracking.log_metrics({f"test_accuracy.{n}": a for n, a in accuracy.items()})
        tracking.log_artifacts(out_dir, artifact_path=COMPARE_RUN)
    tracking.promote_champions(runs, params.registry)  # alias `champion`: the gate decides
    return accuracy


def main(argv: list[str] | None = None) -> int:
    def body(params: Params) -> str:
        accuracy = run(params, config.ROOT, config.compare_plots_dir())
        best = max(accuracy, key=accuracy.get)
        return f"{len(accuracy)} models, best {best} ({accuracy[best]:.4f})"

    return runner.run_stage("plot", body, argv)


if __name__ == "__main__":
    sys.exit(main())
