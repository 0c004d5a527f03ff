"""MLflow runs of a sweep (pipeline/sweep/): one parent run (``run_kind=sweep``) and one
nested child run per trial (tag ``mlflow.parentRunId``), all written by the sweep's driver
through a Ray Tune callback, so trials on other nodes need no access to the tracking store
(a local sqlite store works for a multi-node sweep too). A trial's run ends FINISHED
(tag ``pruned=true`` when ASHA stopped it), FAILED with its one-line error, or KILLED when
the sweep is interrupted; ``--resume`` reopens the same runs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from ray.tune import Callback

from pipeline.tracking.store import tracking_uri, with_retry

RUN_KIND, PARENT = "run_kind", "mlflow.parentRunId"
TRIAL_TAG, SWEEP_TAG = "ray_trial_id", "sweep"


def open_parent(
    name: str, params: dict[str, Any], tags: dict[str, str], run_id: str | None = None
) -> str:
    """Start (or, with ``run_id``, reopen) the parent run of sweep ``name``; its id. The
    experiment must be set (``tracking.setup``)."""
    if run_id:
        mlflow.start_run(run_id=run_id)
        return run_id
    run = mlflow.start_run(
        run_name=f"sweep-{name}", tags={RUN_KIND: "sweep", SWEEP_TAG: name, **tags}
    )
    mlflow.log_params(params)
    return run.info.run_id


def close_parent(status: str, metrics: dict[str, float] | None = None) -> None:
    if metrics:
        mlflow.log_metrics(metrics)
    mlflow.end_run(status)


def log_parent_artifacts(folder: Path) -> None:
    mlflow.log_artifacts(str(folder))


def end_child(run_id: str, status: str) -> None:
    with_retry(lambda: MlflowClient(tracking_uri()).set_terminated(run_id, status))


def children(parent_id: str) -> list[Any]:
    """The child runs of a parent (MLflow Run objects)."""
    client = MlflowClient(tracking_uri())
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], filter_string=_of_parent(parent_id))


def _of_parent(parent_id: str) -> str:
    return f"tags.`{PARENT}` = '{parent_id}'"


class ChildRuns(Callback):
    """Ray Tune callback (driver side): a child run per trial. Picklable (Tune keeps it in
    tuner.pkl for ``Tuner.restore``); after a restore the old runs are found by tag.
    ``progress`` prints one line per finished trial."""

    def __init__(
        self,
        parent_id: str,
        experiment_id: str,
        max_t: int,
        metric: str,
        total: int,
        describe: Callable[[dict], str] | None = None,
    ):
        self.uri = tracking_uri()
        self.parent_id, self.experiment_id = parent_id, experiment_id
        self.max_t, self.metric, self.total = max_t, metric, total
        self.describe = describe
        self.runs: dict[str, str] = {}
        self.closed: set[str] = set()
        self.stopped: set[str] = set()  # trials Tune stopped (ASHA), not ended by themselves
        self.done = 0
        self._client: MlflowClient | None = None

    def __getstate__(self):
        return {**self.__dict__, "_client": None}

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.uri)
        return self._client

    def _call(self, fn: Callable, *args, **kwargs) -> Any:
        return with_retry(lambda: fn(*args, **kwargs))

    def _run(self, trial) -> str:
        tid = trial.trial_id
        if tid not in self.runs:  # after Tuner.restore: the run of the first attempt
            old = self._call(
                self.client.search_runs,
                [self.experiment_id],
                max_results=1,
                filter_string=f"tags.{TRIAL_TAG} = '{tid}' and {_of_parent(self.parent_id)}",
            )
            if old:
                self.runs[tid] = old[0].info.run_id
                self._call(self.client.update_run, self.runs[tid], "RUNNING")
        if tid not in self.runs:
            index = trial.config.get("trial_index", "?")
            run = self._call(
                self.client.create_run,
                self.experiment_id,
                run_name=f"trial-{index}",
                tags={PARENT: self.parent_id, TRIAL_TAG: tid, RUN_KIND: "sweep_trial"},
            )
            self.runs[tid] = run.info.run_id
            for k, v in trial.config.items():
                self._call(self.client.log_param, run.info.run_id, k, v)
        return self.runs[tid]

    def setup(self, **info):
        """At the start of ``fit()``, also after ``Tuner.restore``: the progress count goes
        on from the trials that already ended."""
        kids = self._call(
            self.client.search_runs, [self.experiment_id], filter_string=_of_parent(self.parent_id)
        )
        self.done = sum(k.info.status in ("FINISHED", "FAILED") for k in kids)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        rid = self._run(trial)
        if result.get("done"):
            # Tune marks the result it decided to STOP on with done=True (the scheduler's
            # stop); a trainable that returns by itself ends with a duplicate result that
            # callbacks never see (Ray 2.60, TuneController._process_trial_result).
            self.stopped.add(trial.trial_id)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        metrics = {
            k: float(v)
            for k, v in result.items()
            if k in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
            and isinstance(v, int | float)
            and v == v
        }
        for k, v in metrics.items():
            self._call(self.client.log_metric, rid, k, v, step=step)
        if "node_id" in result and step <= 1:  # where the trial (or its retry) runs
            for tag in ("node_id", "pid", "trial_seed"):
                self._call(self.client.set_tag, rid, tag, str(result.get(tag)))

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._call(self.client.set_tag, self._run(trial), "retried", "true")

    def on_trial_complete(self, iteration, trials, trial, **info):
        rid, last = self._run(trial), trial.last_result or {}
        error = last.get("trial_error")
        if error:
            self._call(self.client.set_tag, rid, "error", error)
            self._finish(trial, rid, "FAILED", error)
            return
        it = int(last.get("training_iteration", 0))
        pruned = trial.trial_id in self.stopped and it < self.max_t
        self._call(self.client.set_tag, rid, "pruned", str(pruned).lower())
        self._finish(trial, rid, "FINISHED", f"pruned at epoch {it}" if pruned else "")

    def on_trial_error(self, iteration, trials, trial, **info):
        rid = self._run(trial)
        line = _first_line(getattr(trial, "error_file", None)) or "the trial's worker failed"
        self._call(self.client.set_tag, rid, "error", line)
        self._finish(trial, rid, "FAILED", line)

    def on_experiment_end(self, trials, **info):
        """Also after Ctrl-C: trials never completed end KILLED (no RUNNING run left)."""
        for tid, rid in self.runs.items():
            if tid not in self.closed:
                self._call(self.client.set_terminated, rid, "KILLED")

    def _finish(self, trial, rid: str, status: str, note: str) -> None:
        self._call(self.client.set_terminated, rid, status)
        self.closed.add(trial.trial_id)
        self.done += 1
        value = (trial.last_result or {}).get(self.metric)
        shown = f"{self.metric} {value:.4f}" if isinstance(value, float) and value == value else ""
        what = self.describe(trial.config) if self.describe else ""
        parts = [f"trial {trial.config.get('trial_index', '?')}", status, shown, note, what]
        print(f"[{self.done}/{self.total}] " + "  ".join(p for p in parts if p), flush=True)
        sys.stdout.flush()


def _first_line(path: str | None) -> str:
    """The last line of a Ray error file (the exception), or ''."""
    try:
        lines = [x for x in Path(path).read_text().splitlines() if x.strip()] if path else []
    except OSError:
        return ""
    return lines[-1][:500] if lines else ""


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")
