"""plot: metrics/*.json + models/*/history.csv -> plots/compare/, then the champions.

Cross-model figures: the test accuracy of every model, and the validation loss and
accuracy over epochs of the models in ``plot.compare_curves`` (cubic_mlp vs dense_mlp).
The per-model figures are drawn by evaluate@<model> into plots/<model>/, so a change to one
model redraws only its own.

The figures go to an MLflow run of their own, one per execution of this stage, tagged
``run_kind=compare`` and with the ``repro_id`` its models' training runs share; the runs
of the models it shows are listed in its params (``run.<model>``). Finished training runs
are never rewritten: an experiment that retrains one model leaves every other model's run
as it was, and each comparison stays the one drawn at its time.

Once every model is evaluated, :func:`promote` moves each model's registry alias
``champion`` to the version its latest training registered, when that one scores better.
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


def read_accuracy(params: Params, root: Path) -> dict[str, float]:
    """Each model's test accuracy from metrics/<model>.json."""
    accuracy = {}
    for name in params.models:
        path = config.metrics_file(name, root)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; run `dvc repro evaluate@{name}` first")
        accuracy[name] = json.loads(path.read_text())["accuracy"]
    return accuracy


def draw(accuracy: dict[str, float], histories: dict[str, pd.DataFrame], out_dir: Path) -> None:
    """Replace ``out_dir`` with the accuracy bars and table and the validation curves."""
    with atomic_dir(out_dir) as tmp:
        figures.save(figures.accuracy_bars(accuracy), tmp / config.ACCURACY_PNG)
        table = pd.Series(accuracy, name="accuracy").rename_axis("model")
        table.to_csv(tmp / config.ACCURACY_CSV)
        if histories:
            figures.save(figures.validation_curves(histories), tmp / config.CURVES_PNG)


def model_runs(params: Params, root: Path) -> dict[str, str]:
    """Each model's training run id, as train@<model> kept it in models/<model>/."""
    return {n: tracking.load_run_id(config.model_dir(n, root)) for n in params.models}


def log_compare_run(params: Params, root: Path, accuracy: dict[str, float], out_dir: Path) -> None:
    """A new run of kind ``compare``: the models' run ids, their accuracy and ``out_dir``."""
    tracking.setup(params.mlflow.experiment)
    runs = model_runs(params, root)
    with tracking.execution_run(COMPARE_RUN, tracking.run_tags(COMPARE_RUN, root=root)):
        tracking.log_params({f"run.{n}": run_id for n, run_id in runs.items()})
        tracking.log_metrics({f"test_accuracy.{n}": a for n, a in accuracy.items()})
        tracking.log_artifacts(out_dir, artifact_path=COMPARE_RUN)


def run(params: Params, root: Path, out_dir: Path) -> dict[str, float]:
    """Draw the cross-model figures into ``out_dir`` and log them to a compare run."""
    accuracy = read_accuracy(params, root)
    histories = {
        name: pd.read_csv(config.model_dir(name, root) / config.HISTORY_CSV)
        for name in params.plot.compare_curves
    }
    draw(accuracy, histories, out_dir)
    log_compare_run(params, root, accuracy, out_dir)
    return accuracy


def promote(params: Params, root: Path) -> list[str]:
    """Move alias ``champion`` of each model to its latest run's version when that beats the
    champion's ``test_accuracy`` (set by evaluate@); one line a decision."""
    tracking.setup(params.mlflow.experiment)
    return tracking.promote_champions(model_runs(params, root), params.registry)


def summary(accuracy: dict[str, float], label: str = "plot") -> str:
    """The stage's last lines: the best model, then every model's test accuracy, best first,
    and how to open the runs (``make ui``)."""
    ranked = sorted(accuracy, key=lambda n: (-accuracy[n], n))
    width = max(len(n) for n in ranked)
    lines = [f"{len(accuracy)} models, best {ranked[0]} ({accuracy[ranked[0]]:.4f})"]
    lines.append(f"{label}:   {'model'.ljust(width)}  test accuracy")
    lines += [f"{label}:   {n.ljust(width)}  {accuracy[n]:.4f}" for n in ranked]
    lines.append(f"{label}: the runs, figures and registry in MLflow's UI: make ui")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    def body(params: Params) -> str:
        accuracy = run(params, config.ROOT, config.compare_plots_dir())
        promote(params, config.ROOT)
        return summary(accuracy)

    return runner.run_stage("plot", body, argv)


if __name__ == "__main__":
    sys.exit(main())
