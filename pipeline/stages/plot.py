"""plot: metrics/*.json + models/*/history.csv -> plots/compare/.

Cross-model figures: the test accuracy of every model, and the validation loss and
accuracy over epochs of the models in ``plot.compare_curves`` (cubic_mlp vs dense_mlp).
The per-model figures are drawn by evaluate@<model> into plots/<model>/, so a change to one
model redraws only its own. Each figure is added to the MLflow run of the models it shows.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

from pipeline import config, figures, tracking
from pipeline.params import Params
from pipeline.stages import cli
from pipeline.stages.train import HISTORY_FILE

ACCURACY_PNG = "test_accuracy.png"
CURVES_PNG = "validation_curves.png"


def run(params: Params, root: Path, out_dir: Path) -> dict[str, float]:
    import mlflow

    accuracy = {}
    for name in params.models:
        path = config.metrics_file(name, root)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; run `dvc repro evaluate@{name}` first")
        accuracy[name] = json.loads(path.read_text())["accuracy"]
    histories = {
        name: pd.read_csv(config.model_dir(name, root) / HISTORY_FILE)
        for name in params.plot.compare_curves
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        figures.save(figures.accuracy_bars(accuracy), tmp / ACCURACY_PNG)
        pd.Series(accuracy, name="accuracy").rename_axis("model").to_csv(tmp / "accuracy.csv")
        if histories:
            figures.save(figures.validation_curves(histories), tmp / CURVES_PNG)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    tracking.setup(params.mlflow.experiment)
    for name in params.models:
        with mlflow.start_run(run_id=tracking.load_run_id(config.model_dir(name, root))):
            mlflow.log_artifact(str(out_dir / ACCURACY_PNG), artifact_path="compare")
            if name in histories:
                mlflow.log_artifact(str(out_dir / CURVES_PNG), artifact_path="compare")
    return accuracy


def main(argv: list[str] | None = None) -> int:
    def body(params: Params) -> str:
        accuracy = run(params, config.ROOT, config.compare_plots_dir())
        best = max(accuracy, key=accuracy.get)
        return f"{len(accuracy)} models, best {best} ({accuracy[best]:.4f})"

    return cli.run_stage("plot", body, argv)


if __name__ == "__main__":
    sys.exit(main())
