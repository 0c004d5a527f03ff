"""train@<model>: data/prepared/<dataset>/ -> models/<model>/.

Builds the model of ``models.<model>`` with its family, trains it on the dataset's train
and validation splits and records one MLflow run: every param of the model and its
dataset, the tags of the run contract, per-epoch metrics (step = epoch) as they happen,
``history.csv`` and the model in its MLflow flavor. The run id is kept in models/<model>/
so that evaluate@<model> and plot add to the same run. Output is written to a temporary
folder and renamed into place at the end.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

from pipeline import config, families, tracking
from pipeline import params as params_mod
from pipeline.data.prepared import load_split
from pipeline.params import Params
from pipeline.stages import cli

HISTORY_FILE = "history.csv"


def _finite(row: dict) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in row.items()
        if k != "epoch" and isinstance(v, int | float) and math.isfinite(v)
    }


def run(params: Params, name: str, data_dir: Path, out_dir: Path) -> tuple[str, pd.DataFrame]:
    """Train model ``name``; return the MLflow run id and the history."""
    import mlflow

    mp = params.models[name]
    family = families.get(mp.family)
    train, val = load_split(data_dir, "train"), load_split(data_dir, "val")
    tracking.setup(params.mlflow.experiment)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    tags = tracking.run_tags(name, mp.family, mp.dataset)
    try:
        with mlflow.start_run(run_name=name, tags=tags) as active:
            run_id = active.info.run_id
            logged = {"seed": params.seed, "model": name}
            logged |= {f"model.{k}": v for k, v in params_mod.flatten(mp).items()}
            ds = params.datasets[mp.dataset]
            logged |= {f"dataset.{k}": v for k, v in params_mod.flatten(ds).items()}
            logged |= {"dataset.n_train": len(train), "dataset.n_val": len(val)}
            tracking.with_retry(lambda: mlflow.log_params(logged))

            def on_epoch(row: dict) -> None:
                step = int(row["epoch"])
                tracking.with_retry(lambda: mlflow.log_metrics(_finite(row), step=step))

            history = family.train(mp, train, val, seed=params.seed, out_dir=tmp, on_epoch=on_epoch)
            frame = pd.DataFrame(history)
            frame.to_csv(tmp / HISTORY_FILE, index=False)
            tracking.save_run_id(tmp, run_id)
            mlflow.log_artifact(str(tmp / HISTORY_FILE))
            families.log_model(mp.family, family.load(tmp), tmp, train.x[:2])
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_id, frame


def main(argv: list[str] | None = None) -> int:
    def body(params: Params, name: str) -> str:
        ds = params.models[name].dataset
        run_id, history = run(params, name, config.prepared_dir(ds), config.model_dir(name))
        last = history.iloc[-1]
        return (
            f"{len(history)} epochs, val_accuracy {last['val_accuracy']:.4f}, MLflow run {run_id}"
        )

    return cli.run_stage("train", body, argv, section="models")


if __name__ == "__main__":
    sys.exit(main())
