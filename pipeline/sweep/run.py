"""The driver of ``python -m pipeline.sweep NAME``: check the sweep, start Ray, run the
trials under one MLflow parent run, write the parent's artifacts and print the
``bin/dvc exp run -S ...`` line of the best configuration."""

from __future__ import annotations

import functools
import json
import math
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import tracking
from pipeline.core import config
from pipeline.core import params as params_mod
from pipeline.core.params import Params, SweepParams
from pipeline.data.prepared import load_split
from pipeline.sweep import runtime, spec
from pipeline.sweep.trial import NODE_ID, TRIAL_ERROR, TRIAL_SEED

TRIALS_CSV, BEST_JSON = "trials.csv", "best.json"
PARALLEL_PNG, BEST_PNG = "parallel_coordinates.png", "best_so_far.png"


class SweepError(RuntimeError):
    """A sweep cannot start or resume; one line."""


def describe(config: dict, keys: tuple[str, ...]) -> str:
    """``learning_rate=0.00123 batch_size=64`` (the last part of each key)."""
    out = []
    for k in keys:
        v = config.get(k)
        out.append(f"{k.rsplit('.', 1)[-1]}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(out)


def _parent_file(name: str) -> Path:
    return runtime.storage_dir() / f"{name}.parent_run_id"


def run_sweep(
    params: Params,
    name: str,
    *,
    trials: int | None = None,
    resume: bool = False,
    points: list[dict] | None = None,
    asha: bool = True,
    max_concurrent: int | None = None,
) -> dict[str, Any] | None:
    """Run (or resume) sweep ``name``; the content of best.json, or None when interrupted.
    ``points``/``asha``/``max_concurrent`` are for the benchmark (fixed configs, FIFO)."""
    sw = spec.sweep_of(params, name)
    if trials is not None:
        sw = sw.model_copy(update={"trials": trials})
    if not asha:
        sw = sw.model_copy(update={"asha": None})
    mp = params.models[sw.model]
    data_dir = config.prepared_dir(mp.dataset)
    train, val = load_split(data_dir, "train"), load_split(data_dir, "val")
    exp_dir, parent_file = runtime.storage_dir() / name, _parent_file(name)
    runtime.loopback()  # before Ray's first import
    from ray import tune

    if resume and not (parent_file.is_file() and tune.Tuner.can_restore(str(exp_dir))):
        raise SweepError(f"sweep {name}: nothing to resume in {exp_dir}")
    seconds = runtime.start_ray()
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    conc = max_concurrent or sw.max_concurrent or max(1, cpus // sw.cpus_per_trial)
    where = "multi-node" if runtime.multi_node() else "local"
    print(
        f"sweep {name}: {sw.trials} trials of {sw.model} ({mp.train.epochs} epochs), "
        f"{conc} at a time, {where} Ray with {cpus} CPUs (up in {seconds:.1f} s)",
        flush=True,
    )
    exp_id = tracking.setup(params.mlflow.experiment)
    from pipeline.tracking import sweeps as sweep_runs

    if resume:
        parent = sweep_runs.open_parent(name, {}, {}, run_id=parent_file.read_text().strip())
    else:
        shutil.rmtree(exp_dir, ignore_errors=True)
        logged = {f"sweep.{k}": v for k, v in params_mod.flatten(sw).items()}
        tags = {"sweep_model": sw.model, "sweep_nodes": where}
        parent = sweep_runs.open_parent(name, logged | {"max_concurrent": conc}, tags)
        parent_file.parent.mkdir(parents=True, exist_ok=True)
        parent_file.write_text(parent)
    try:
        results = _fit(sw, name, params, train, val, parent, exp_id, conc, resume, points)
        kids = sweep_runs.children(parent)
        ended = [k for k in kids if k.info.status in ("FINISHED", "FAILED")]
        if len(ended) < sw.trials:
            _kill_open(kids)
            sweep_runs.close_parent("KILLED")
            print(
                f"sweep {name} interrupted after {len(ended)}/{sw.trials} trials; "
                f"continue with: python -m pipeline.sweep {name} --resume",
                flush=True,
            )
            return None
        best = _finish(sw, name, results, parent, kids)
    except BaseException:
        _kill_open(sweep_runs.children(parent))
        sweep_runs.close_parent("KILLED")
        raise
    return best


def _fit(sw, name, params, train, val, parent, exp_id, conc, resume, points):
    from ray import tune

    from pipeline.sweep.search import make_scheduler, make_searcher
    from pipeline.sweep.trial import train_trial
    from pipeline.tracking import sweeps as sweep_runs

    mp = params.models[sw.model]
    trainable = tune.with_resources(
        tune.with_parameters(
            train_trial,
            preset=params_mod.to_dict(mp),
            train=train,
            val=val,
            sweep_seed=sw.seed,
            metric=sw.metric,
            n_classes=len(params.dataset_of(sw.model).classes),
            image_shape=tuple(params.validate.image_shape),
        ),
        {"cpu": sw.cpus_per_trial},
    )
    exp_dir = runtime.storage_dir() / name
    if resume:
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, restart_errored=True)
    else:
        callback = sweep_runs.ChildRuns(
            parent,
            exp_id,
            mp.train.epochs,
            sw.metric,
            sw.trials,
            functools.partial(describe, keys=tuple(sw.space)),
        )
        tuner = tune.Tuner(
            trainable,
            param_space=spec.tune_space(sw),
            tune_config=tune.TuneConfig(
                metric=sw.metric,
                mode=sw.mode,
                search_alg=make_searcher(sw, points),
                scheduler=make_scheduler(sw, mp.train.epochs),
                num_samples=sw.trials,
                max_concurrent_trials=conc,
                # A worker is reused only without ASHA. Tune stops a pruned trial mid-epoch;
                # reusing its worker waits 2 s for the epoch to end, then fails the next
                # trial (ERROR) and never frees its slot of max_concurrent_trials: with
                # two such failures the sweep waited forever (Ray 2.60, keras_small_cnn_lr).
                # A fresh worker costs its start and TensorFlow's import instead.
                reuse_actors=sw.asha is None,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(runtime.storage_dir()),
                callbacks=[callback],
                failure_config=tune.FailureConfig(max_failures=2),
                verbose=0,
            ),
        )
    return tuner.fit()


def _kill_open(kids: list) -> None:
    from pipeline.tracking import sweeps as sweep_runs

    for k in kids:
        if k.info.status == "RUNNING":
            sweep_runs.end_child(k.info.run_id, "KILLED")


def _table(results, sw: SweepParams, kids: list) -> pd.DataFrame:
    run_of = {k.data.tags.get("ray_trial_id"): k for k in kids}
    rows = []
    for r in results:
        m, cfg = r.metrics or {}, r.config or {}
        kid = run_of.get(m.get("trial_id"))
        rows.append(
            {
                "trial_index": cfg.get(spec.TRIAL_INDEX),
                **spec.overrides(cfg, sw),
                sw.metric: m.get(sw.metric, math.nan),
                "epochs": m.get("training_iteration"),
                "status": kid.info.status if kid else "",
                "pruned": kid.data.tags.get("pruned", "") if kid else "",
                "error": m.get(TRIAL_ERROR, ""),
                "trial_seed": m.get(TRIAL_SEED),
                "node_id": m.get(NODE_ID),
                "run_id": kid.info.run_id if kid else "",
            }
        )
    return pd.DataFrame(rows).sort_values("trial_index")


def _finish(sw, name, results, parent, kids) -> dict[str, Any]:
    from pipeline.sweep import plots
    from pipeline.tracking import sweeps as sweep_runs

    table = _table(results, sw, kids)
    ok = table.dropna(subset=[sw.metric])
    if ok.empty:
        sweep_runs.close_parent("FAILED")
        raise SweepError(f"sweep {name}: every trial failed (see the child runs' error tags)")
    row = ok.loc[ok[sw.metric].idxmax() if sw.mode == "max" else ok[sw.metric].idxmin()]
    config_ = {k: _plain(row[k]) for k in sw.space}
    best = {
        "sweep": name,
        "model": sw.model,
        "metric": sw.metric,
        "mode": sw.mode,
        "value": float(row[sw.metric]),
        "config": config_,
        "trial_index": int(row["trial_index"]),
        "trial_run_id": row["run_id"],
        "parent_run_id": parent,
        "trials": len(table),
        "failed": int((table["status"] == "FAILED").sum()),
        "pruned": int((table["pruned"] == "true").sum()),
        "dvc_command": shlex.join(spec.dvc_command(sw, config_)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        table.to_csv(folder / TRIALS_CSV, index=False)
        (folder / BEST_JSON).write_text(json.dumps(best, indent=2) + "\n")
        plots.parallel_coordinates(table, sw, folder / PARALLEL_PNG)
        plots.best_so_far(table, sw, folder / BEST_PNG)
        sweep_runs.log_parent_artifacts(folder)
        out = runtime.storage_dir() / f"{name}.{BEST_JSON}"
        shutil.copy(folder / BEST_JSON, out)
    sweep_runs.close_parent("FINISHED", {f"best_{sw.metric}": best["value"]})
    return best


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def apply(best: dict[str, Any], root: Path = config.ROOT, env: dict | None = None) -> int:
    """Run the best configuration as a DVC experiment (the real stages: train, evaluate,
    register, gate); ``env``: the user's environment (default: this process's)."""
    print(f"$ {best['dvc_command']}", flush=True)
    cmd = shlex.split(best["dvc_command"])
    return subprocess.call(cmd, cwd=root, env=env if env is not None else os.environ.copy())
