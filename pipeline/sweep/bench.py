"""``make bench-sweep``: the same 8 trials of a small preset (dense_mlp, fixed learning
rates, no ASHA, 1 CPU each) on a local Ray with 1 and with 2 trials at a time, and in-process
without Ray; the speed-up, Ray's overhead per trial, the load average. Writes the section
"sweep" of docs/benchmarks.md; the last line printed is JSON. The goals (speed-up >= 1.7x
on 2 cores, overhead <= 10%) can only be judged on idle cores: the load is recorded."""

from __future__ import annotations

import json
import os
import time

import numpy as np

from pipeline.core import config
from pipeline.core import params as params_mod
from pipeline.data.prepared import Split, load_split

PRESET, TRIALS, EPOCHS, IMAGES = "dense_mlp", 8, 3, 3000
RATES = [round(0.005 * 1.5**i, 5) for i in range(TRIALS)]


def _data(params) -> tuple[Split, Split]:
    """The preset's prepared splits (first IMAGES), else synthetic 3-class images."""
    ds = config.prepared_dir(params.models[PRESET].dataset)
    try:
        train, val = load_split(ds, "train"), load_split(ds, "val")
        return Split(train.x[:IMAGES], train.y[:IMAGES]), Split(val.x[:600], val.y[:600])
    except FileNotFoundError:
        rng = np.random.default_rng(0)
        y = rng.integers(0, 3, IMAGES + 600)
        x = rng.random((len(y), 28, 28, 1), dtype=np.float32) * 0.3
        for c in range(3):
            x[y == c, 4 + 6 * c : 10 + 6 * c, 4:24] += 0.7
        x = np.clip(x, 0, 1)
        return Split(x[:IMAGES], y[:IMAGES]), Split(x[IMAGES:], y[IMAGES:])


def _preset(params):
    mp = params.models[PRESET]
    return mp.model_copy(update={"train": mp.train.model_copy(update={"epochs": EPOCHS})})


def in_process(mp, train, val) -> float:
    from pipeline.sweep.trial import run_trial, trial_seed

    t = time.perf_counter()
    for i, rate in enumerate(RATES):
        one = params_mod.with_overrides(mp, {"train.learning_rate": rate}, 3, (28, 28))
        run_trial({}, one, train, val, seed=trial_seed(0, i), cpus=1, report=lambda r: None)
    return time.perf_counter() - t


def on_ray(mp, train, val, concurrent: int) -> float:
    from ray import tune

    from pipeline.sweep import runtime
    from pipeline.sweep.trial import train_trial

    trainable = tune.with_resources(
        tune.with_parameters(
            train_trial, preset=params_mod.to_dict(mp), train=train, val=val, n_classes=3
        ),
        {"cpu": 1},
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"train.learning_rate": tune.grid_search(RATES)},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrent, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"bench-{concurrent}", storage_path=str(runtime.storage_dir()), verbose=0
        ),
    )
    t = time.perf_counter()
    grid = tuner.fit()
    seconds = time.perf_counter() - t
    if grid.num_errors or any(r.metrics.get("trial_error") for r in grid):
        raise RuntimeError(f"bench-sweep: a trial failed at {concurrent} at a time")
    return seconds


def main() -> int:
    from pipeline.devtools.benchmarks import this_machine, write_section
    from pipeline.sweep import runtime

    params = params_mod.load()
    mp = _preset(params)
    train, val = _data(params)
    load_before = os.getloadavg()
    inproc = in_process(mp, train, val)
    print(f"in-process: {TRIALS} trials in {inproc:.1f} s", flush=True)
    ray_init = runtime.start_ray(num_cpus=2)
    one = on_ray(mp, train, val, 1)
    print(f"Ray, 1 at a time: {one:.1f} s", flush=True)
    two = on_ray(mp, train, val, 2)
    print(f"Ray, 2 at a time: {two:.1f} s", flush=True)
    load_after = os.getloadavg()
    result = {
        "trials": TRIALS,
        "epochs": EPOCHS,
        "images": len(train),
        "in_process_s": round(inproc, 2),
        "ray_1_s": round(one, 2),
        "ray_2_s": round(two, 2),
        "ray_init_s": round(ray_init, 2),
        "speedup": round(one / two, 3),
        "overhead_per_trial_s": round((one - inproc) / TRIALS, 3),
        "overhead_pct": round(100 * (one / inproc - 1), 1),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
    }
    rows = [
        ("in-process, no Ray", inproc, ""),
        ("Ray, 1 trial at a time", one, f"overhead {result['overhead_pct']}%"),
        ("Ray, 2 trials at a time", two, f"speed-up {result['speedup']}x over 1 at a time"),
    ]
    table = "| run | seconds | |\n| --- | --- | --- |\n" + "\n".join(
        f"| {a} | {b:.1f} | {c} |" for a, b, c in rows
    )
    text = (
        f"{TRIALS} trials of `{PRESET}` ({EPOCHS} epochs, {len(train)} images, fixed learning "
        f"rates, no ASHA, 1 CPU a trial; `make bench-sweep`). Ray started in "
        f"{ray_init:.1f} s (not counted). Load average before/after: {result['loadavg_before']}"
        f" / {result['loadavg_after']} on {result['cpus']} CPUs: the goals (speed-up >= 1.7x, "
        f"overhead <= 10%) need idle cores to judge.\n\n{table}"
    )
    write_section("sweep", text, this_machine(), title="Sweeps on Ray Tune (make bench-sweep)")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
