"""train@<model>: data/prepared/<dataset>/ -> models/<model>/.

Builds the model of ``models.<model>`` with its family, trains it on the dataset's train
and validation splits and records one MLflow run: every param of the model and its
dataset, the tags of the run contract, per-epoch metrics (step = epoch) as they happen,
``history.csv`` and the model in its MLflow flavor. The run id is kept in models/<model>/
so that evaluate@<model> and plot add to the same run. The output folder is replaced
atomically at the end: a failure keeps the previous one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from pipeline import tracking
from pipeline.core import config, runner
from pipeline.core import params as params_mod
from pipeline.core.io import atomic_dir
from pipeline.core.params import Params
from pipeline.data.prepared import load_split
from pipeline.models import family as families
from pipeline.tracking import serving


def run(params: Params, name: str, data_dir: Path, out_dir: Path) -> tuple[str, pd.DataFrame]:
    """Train model ``name``; return the MLflow run id and the history."""
    mp = params.models[name]
    family = families.get(mp.family)
    train, val = load_split(data_dir, "train"), load_split(data_dir, "val")
    tracking.setup(params.mlflow.experiment)
    with atomic_dir(out_dir) as tmp, tracking.training_run(name, mp.family, mp.dataset) as run_id:
        logged = {"seed": params.seed, "model": name}
        logged |= {f"model.{k}": v for k, v in params_mod.flatten(mp).items()}
        ds = params.datasets[mp.dataset]
        logged |= {f"dataset.{k}": v for k, v in params_mod.flatten(ds).items()}
        logged |= {"dataset.n_train": len(train), "dataset.n_val": len(val)}
        tracking.log_params(logged)
        tracking.log_prepared_inputs(mp.dataset, data_dir)

        def on_epoch(row: dict) -> None:
            tracking.log_metrics(row, step=int(row["epoch"]))

        history = family.train(mp, train, val, seed=params.seed, out_dir=tmp, on_epoch=on_epoch)
        frame = pd.DataFrame(history)
        frame.to_csv(tmp / config.HISTORY_CSV, index=False)
        tracking.save_run_id(tmp, run_id)
        tracking.log_artifact(tmp / config.HISTORY_CSV)
        family.log_model(family.load(tmp), tmp, train.x[:2])
        tracking.register_model(name, mp.dataset)
        serving.log_serving_model(name, tmp, ds.classes)  # <name>-serving: pipeline.serve
    return run_id, frame


def main(argv: list[str] | None = None) -> int:
    def body(params: Params, name: str) -> str:
        ds = params.models[name].dataset
        run_id, history = run(params, name, config.prepared_dir(ds), config.model_dir(name))
        last = history.iloc[-1]
        return (
            f"{len(history)} epochs, val_accuracy {last['val_accuracy']:.4f}, MLflow run {run_id}"
        )

    return runner.run_stage("train", body, argv, section="models")


if __name__ == "__main__":
    sys.exit(main())
