"""Runs made elsewhere. A model pulled from a DVC remote carries the id of the MLflow run
that trained it (models/<model>/mlflow_run_id), but that run lives in the store of whoever
trained it. A fresh clone's store, or a CI runner's, does not have it; the team's tracking
server does. A stage that meets such an id logs to a run of its own that names it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow

from pipeline.core import config
from pipeline.core.dvc_outs import lock_stages
from pipeline.tracking.runs import reopen
from pipeline.tracking.store import reachable, with_retry

SOURCE_RUN_TAG = "source_run_id"  # the run a continuation stands in for
SOURCE_TAG = "source"  # where that run id came from (the file a DVC output carried)
SOURCE_STORE_TAG = "source_store"  # the store it was looked for in, without success


def run_exists(run_id: str) -> bool:
    """True when the current store holds ``run_id`` as a live (not deleted) run."""
    from mlflow.exceptions import MlflowException

    try:
        run = with_retry(lambda: mlflow.MlflowClient().get_run(run_id))
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return False
        raise
    return run.info.lifecycle_stage == "active"


def source_label(path: Path, root: Path = config.ROOT) -> str:
    """``path`` relative to the checkout (what a run's ``source`` tag names), with the DVC
    hash of the stage output holding it when dvc.lock records one."""
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        return str(path)
    for stage in lock_stages(root).values():
        for out in stage.get("outs", []):
            if rel.parts[: len(Path(out["path"]).parts)] == Path(out["path"]).parts:
                return f"{rel}, DVC output {out['path']} md5 {out.get('md5', '?')}"
    return str(rel)


@contextmanager
def reopen_or_continue(
    run_id: str, source: str, tags: dict[str, str] | None = None, log=None
) -> Iterator[str]:
    """Add to run ``run_id`` when the current store has it (as ``reopen``); otherwise start
    a run of its own, tagged with the original id and ``source`` (e.g. the file the id was
    read from), and say so in one line through ``log`` (a logging-style ``info``). Yields
    the id of the run that receives what the stage logs.

    Used by stages that meet runs made elsewhere: models restored by ``dvc pull`` from a
    remote, whose training ran on another machine with another store.
    """
    with reachable():
        exists = run_exists(run_id)
    if exists:
        with reopen(run_id):
            yield run_id
        return
    all_tags = dict(tags or {})
    all_tags |= {
        SOURCE_RUN_TAG: run_id,
        SOURCE_TAG: source,
        SOURCE_STORE_TAG: mlflow.get_tracking_uri(),
    }
    name = all_tags.get("mlflow.runName") or "run"
    all_tags["mlflow.runName"] = f"{name} (continues {run_id[:8]})"
    with mlflow.start_run(tags=all_tags) as run:
        if log is not None:
            log(
                f"MLflow run {run_id} (from {source}) is not in this store; "
                f"logging to new run {run.info.run_id} tagged {SOURCE_RUN_TAG}={run_id}"
            )
        yield run.info.run_id
