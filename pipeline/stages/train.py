"""train@<model>: data/prepared/<dataset>/ -> models/<model>/.

Builds the model of ``models.<model>`` with its family, trains it on the dataset's train
and validation splits and records one MLflow run: the params of the model (its
architecture as one line) and of its dataset, the tags of the run contract, per-epoch
metrics (step = epoch) as they happen, ``history.csv`` and the model in its MLflow flavor.
The run id is kept in models/<model>/ so that evaluate@<model> and plot add to the same run.
The output folder is replaced atomically at the end: a failure keeps the previous one.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from pipeline import stages, tracking
from pipeline.core import config, runner
from pipeline.core import params as params_mod
from pipeline.core.io import atomic_dir
from pipeline.core.params import Params
from pipeline.data.prepared import load_split
from pipeline.models import family as families
from pipeline.tracking import serving


def describe_arch(arch: tuple) -> str:
    """The architecture in one line, each layer's fields that differ from their defaults:
    ``flatten | dense(100) | dense(3, activation=softmax)`` (a flag set: its name alone)."""
    parts = []
    for layer in arch:
        fields = type(layer).model_fields
        given = {
            k: v
            for k, v in layer.model_dump().items()
            if k != "type" and (fields[k].is_required() or v != fields[k].default)
        }
        main = next((k for k in ("filters", "units", "rate", "size") if k in given), None)
        args = [str(given.pop(main))] if main else []
        args += [k if v is True else f"{k}={v}" for k, v in given.items()]
        parts.append(f"{layer.type}({', '.join(args)})" if args else layer.type)
    return " | ".join(parts)


def logged_params(seed: int, name: str, mp, ds) -> dict:
    """The run's MLflow params: ``seed``, ``model``, ``model.arch`` (one readable line),
    ``model.<field>`` and ``dataset.<field>`` flattened (``model.train.learning_rate``,
    ``dataset.classes.<i>``), unset ones (None) left out."""
    logged = {"seed": seed, "model": name}
    if hasattr(mp, "arch"):  # an ensemble has members instead
        logged["model.arch"] = describe_arch(mp.arch)
    flat = params_mod.flatten(mp)
    logged |= {f"model.{k}": v for k, v in flat.items() if not k.startswith("arch.")}
    logged |= {f"dataset.{k}": v for k, v in params_mod.flatten(ds).items()}
    return {k: v for k, v in logged.items() if v is not None}


def mlflow_epoch_metrics(row: dict) -> dict:
    """An epoch's history row as MLflow metrics: the training split's ``loss`` and
    ``accuracy`` as ``train_loss`` and ``train_accuracy`` (beside ``val_*`` and evaluate@'s
    ``test_*``); history.csv keeps the family's names."""
    return {f"train_{k}" if k in ("loss", "accuracy") else k: v for k, v in row.items()}


def epoch_lines() -> bool:
    """One line an epoch from this stage instead of the family's progress display: when
    stderr is not a terminal (a log, CI, ``dvc exp run`` in the background), where Keras
    would print two lines an epoch and the NumPy family's bar is erased. ``PIPELINE_VERBOSE=1``
    keeps the family's own."""
    return not stages.stderr_is_terminal() and not stages.verbose()


def quiet_kwargs(train_fn) -> dict:
    """The arguments that turn a family's own progress off: Keras' ``verbose=0``, the NumPy
    family's ``progress=False`` (whichever its ``train`` takes)."""
    taken = inspect.signature(train_fn).parameters
    return {k: v for k, v in (("verbose", 0), ("progress", False)) if k in taken}


@contextlib.contextmanager
def no_keras_bars() -> Iterator[None]:
    """Without the progress bar Keras' ``predict`` prints on stdout when MLflow validates a
    logged model's input example (its messages go to absl's logger, kept at WARNING:
    pipeline/stages/__init__.py); nothing when Keras is not loaded or PIPELINE_VERBOSE=1."""
    keras = sys.modules.get("keras")  # loaded by the family, if it is a Keras one
    if keras is None or stages.verbose():
        yield
        return
    was = keras.config.is_interactive_logging_enabled()
    keras.config.disable_interactive_logging()
    try:
        yield
    finally:
        if was:
            keras.config.enable_interactive_logging()


def epoch_line(name: str, row: dict, epochs: int) -> str:
    """``train@<name>: epoch 3/20 loss 0.1234 accuracy 0.9612 val_loss ... lr 0.001 (1.2 s)``."""
    shown = [
        f"{k} {row[k]:.4f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in row
    ]
    if "learning_rate" in row:
        shown.append(f"lr {row['learning_rate']:.3g}")
    took = f" ({row['epoch_seconds']:.1f} s)" if "epoch_seconds" in row else ""
    return f"train@{name}: epoch {int(row['epoch'])}/{epochs} {' '.join(shown)}{took}"


def run(params: Params, name: str, data_dir: Path, out_dir: Path) -> tuple[str, pd.DataFrame]:
    """Train model ``name``; return the MLflow run id and the history."""
    mp = params.models[name]
    family = families.get(mp.family)
    train, val = load_split(data_dir, "train"), load_split(data_dir, "val")
    tracking.setup(params.mlflow.experiment)
    with atomic_dir(out_dir) as tmp, tracking.training_run(name, mp.family, mp.dataset) as run_id:
        ds = params.datasets[mp.dataset]
        logged = logged_params(params.seed, name, mp, ds)
        logged |= {"dataset.n_train": len(train), "dataset.n_val": len(val)}
        tracking.log_params(logged)
        tracking.log_prepared_inputs(mp.dataset, data_dir)

        lines = epoch_lines()

        def on_epoch(row: dict) -> None:
            tracking.log_metrics(mlflow_epoch_metrics(row), step=int(row["epoch"]))
            if lines:
                epochs = mp.train.epochs if hasattr(mp, "train") else 1  # an ensemble: one row
                print(epoch_line(name, row, epochs), file=sys.stderr, flush=True)

        # in a log, Keras' callbacks (early stopping's "Restoring model weights") are quiet too
        with no_keras_bars() if lines else contextlib.nullcontext():
            history = family.train(
                mp, train, val, seed=params.seed, out_dir=tmp, on_epoch=on_epoch,
                **(quiet_kwargs(family.train) if lines else {}),
            )  # fmt: skip
        frame = pd.DataFrame(history)
        frame.to_csv(tmp / config.HISTORY_CSV, index=False)
        tracking.save_run_id(tmp, run_id)
        tracking.log_artifact(tmp / config.HISTORY_CSV)
        with no_keras_bars():  # MLflow checks the input example with Keras' predict
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
