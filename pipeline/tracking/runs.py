"""A stage's MLflow run: started or reopened, ended with the right status, and what the
stages log to it (params, metrics, artifacts, figures, the prepared datasets)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow

from pipeline.core import config
from pipeline.tracking import views
from pipeline.tracking.orphans import kill_orphan_runs, process_tags
from pipeline.tracking.provenance import dataset_hash, file_md5, run_tags
from pipeline.tracking.store import reachable, with_retry


def save_run_id(model_dir: Path, run_id: str) -> None:
    (model_dir / config.RUN_ID_FILE).write_text(run_id + "\n")


def load_run_id(model_dir: Path) -> str:
    path = model_dir / config.RUN_ID_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no MLflow run id; run `dvc repro train` first")
    return path.read_text().strip()


@contextmanager
def training_run(model: str, family: str, dataset: str, root: Path = config.ROOT) -> Iterator[str]:
    """A new run of the contract for one execution of train@<model>; yields its id.
    Runs of any preset left RUNNING by a killed process are marked KILLED first."""
    with reachable():
        kill_orphan_runs()
        tags = run_tags(model, family, dataset, root) | process_tags()
        run = mlflow.start_run(run_name=tags["mlflow.runName"], tags=tags)
    with reachable(), _ended(run.info.run_id):
        yield run.info.run_id


@contextmanager
def reopen(run_id: str) -> Iterator[str]:
    """Add to an existing run (evaluate@ adds to the training's run); the run's process
    tags name this process while it is open."""
    with reachable():
        try:
            mlflow.MlflowClient().get_run(run_id)  # in this store?
        except mlflow.exceptions.MlflowException:
            raise RuntimeError(
                f"MLflow run {run_id} is not in the store {mlflow.get_tracking_uri()}; "
                "rerun the training (dvc repro -f train@<model>) to log a new one"
            ) from None
        kill_orphan_runs()  # of any preset: a killed stage restored from the run cache
        mlflow.start_run(run_id=run_id)
        with_retry(lambda: mlflow.set_tags(process_tags()))
    with reachable(), _ended(run_id):
        yield run_id


@contextmanager
def execution_run(name: str, tags: dict[str, str]) -> Iterator[str]:
    """A new run for one execution of a stage that is not a model's (``plot``)."""
    with reachable():
        kill_orphan_runs()
        run = mlflow.start_run(
            run_name=tags.get("mlflow.runName", name), tags=tags | process_tags()
        )
    with reachable(), _ended(run.info.run_id):
        yield run.info.run_id


@contextmanager
def _ended(run_id: str) -> Iterator[None]:
    """End the active run FINISHED, FAILED on an error, KILLED on Ctrl-C or SIGTERM (the
    stage runner turns SIGTERM into KeyboardInterrupt); mlflow.start_run's own context
    says FAILED for all of them."""
    try:
        yield
    except KeyboardInterrupt:
        _end(run_id, "KILLED")
        raise
    except BaseException:
        _end(run_id, "FAILED")
        raise
    _end(run_id, "FINISHED")


def _end(run_id: str, status: str) -> None:
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        with_retry(lambda: mlflow.end_run(status))


# --------------------------------------------------------------------------- logging


def log_params(values: dict[str, Any]) -> None:
    with_retry(lambda: mlflow.log_params(values))


def _finite(row: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in row.items()
        if k != "epoch" and isinstance(v, int | float) and math.isfinite(v)
    }


def log_metrics(values: dict[str, Any], step: int | None = None) -> None:
    """Log the finite numbers of ``values`` (an ``epoch`` key is the step, not a metric)."""
    with_retry(lambda: mlflow.log_metrics(_finite(values), step=step))


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_artifacts(folder: Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifacts(str(folder), artifact_path=artifact_path)


IMAGE_KEYS = ("confusion_matrix", "curves", "predictions_grid")  # predictions_grid: mistakes


def log_images(folder: Path, names: tuple[str, ...] = IMAGE_KEYS) -> None:
    """Figures at the run's top level (``<name>.png``) and as MLflow images (key ``<name>``),
    which the UI's run comparison shows side by side (nested artifacts it cannot reach) and the
    experiment's saved view "Figures" draws as pictures."""
    from PIL import Image

    for name in names:
        path = folder / f"{name}.png"
        if not path.is_file():
            continue
        mlflow.log_artifact(str(path))
        with Image.open(path) as img:
            # synchronous: MLflow's default queues the image's tag, and end_run then waits
            # about a second for its logging thread (measured in evaluate@)
            mlflow.log_image(img.convert("RGB"), key=name, step=0, synchronous=True)
    _ensure_figures_view(names)


def _ensure_figures_view(names: tuple[str, ...]) -> None:
    """Give the active run's experiment the saved view that draws images ``names`` as pictures
    (views.py), unless it has one by that id (a user may have saved over it)."""
    client = mlflow.MlflowClient()
    exp_id = mlflow.active_run().info.experiment_id
    if views.VIEW_TAG not in with_retry(lambda: client.get_experiment(exp_id)).tags:
        with_retry(lambda: client.set_experiment_tag(exp_id, views.VIEW_TAG, views.envelope(names)))


def log_prepared_inputs(dataset: str, data_dir: Path, root: Path = config.ROOT) -> None:
    """The prepared splits as the run's MLflow datasets (the "Datasets" column of the UI):
    name ``<dataset>/<split>``, source the split's path in the checkout, digest its DVC md5,
    context the split; the folder's DVC hash rides along as a tag."""
    from mlflow.data.meta_dataset import MetaDataset

    # The local-file source class by name: resolving a path (resolve_dataset_source) warns
    # "can be interpreted in multiple ways" on every run, as MLflow 3.17 registers it twice.
    from mlflow.data.sources import LocalArtifactDatasetSource

    folder_md5 = dataset_hash(dataset, root) or ""
    for split in config.SPLITS:
        path = config.split_file(data_dir, split)
        try:
            rel = path.resolve().relative_to(root.resolve())
        except ValueError:
            rel = path
        ds = MetaDataset(
            source=LocalArtifactDatasetSource(str(rel)),
            name=f"{dataset}/{split}",
            digest=file_md5(path),
        )
        tags = {"dvc_md5": folder_md5} if folder_md5 else None
        with_retry(lambda ds=ds, split=split, tags=tags: mlflow.log_input(ds, split, tags))
