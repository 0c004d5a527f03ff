"""``make bench-sweep``: the same 8 trials of a small preset (dense_mlp, fixed learning rates,
no ASHA, 1 CPU each) in-process without Ray, then on one local Ray with 1 and with 2 trials
at a time. Speed-up = wall of 1 at a time / wall of 2 at a time. Ray's overhead per trial =
(the trial's wall in Ray, 1 at a time, seen by the driver from start to end - the same
config's wall in-process) / in-process, averaged over the trials. Both sides run the same
``trial.run_trial`` with TensorFlow and BLAS pinned to 1 thread, at the same priority (Ray
runs its workers at nice 15 by default). Both sides are warmed up
untimed first (one 1-epoch trial in-process; a 2-trial sweep on Ray, so that Ray's first-use
costs fall on neither setting); a new Ray worker's start and TensorFlow import stay in its
first trial (Ray's cost). Trials last tens of seconds on idle cores so that Ray's fixed
costs are amortised as in a real sweep. Writes the section "sweep" of docs/benchmarks.md;
the last line printed is JSON. The goals (speed-up >= 1.7x on 2 cores, overhead <= 10%)
can only be judged on idle cores: the load average is recorded."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

from pipeline.core import config
from pipeline.core import params as params_mod
from pipeline.data.prepared import Split, load_split

PRESET, TRIALS, EPOCHS, IMAGES, VAL = "dense_mlp", 8, 20, 12000, 2000


def rates(trials: int) -> list[float]:
    return [round(0.005 * 1.3**i, 5) for i in range(trials)]


def _data(params, images: int) -> tuple[Split, Split, str]:
    """The preset's prepared splits when they hold ``images`` training images, else
    synthetic 3-class images of the same size (the work per trial is the same either way)."""
    ds = params.models[PRESET].dataset
    try:
        train = load_split(config.prepared_dir(ds), "train")
        val = load_split(config.prepared_dir(ds), "val")
        if len(train) >= images and len(val) >= VAL:
            pick = Split(train.x[:images], train.y[:images]), Split(val.x[:VAL], val.y[:VAL])
            return (*pick, f"data/prepared/{ds}")
    except FileNotFoundError:
        pass
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, images + VAL)
    x = rng.random((len(y), 28, 28, 1), dtype=np.float32) * 0.3
    for c in range(3):
        x[y == c, 4 + 6 * c : 10 + 6 * c, 4:24] += 0.7
    x = np.clip(x, 0, 1)
    return Split(x[:images], y[:images]), Split(x[images:], y[images:]), "synthetic"


def _preset(params, epochs: int):
    mp = params.models[PRESET]
    train = mp.train.model_copy(update={"epochs": epochs, "early_stopping": None})
    return mp.model_copy(update={"train": train})


def in_process(mp, train, val, lrs: list[float], label: str = "in-process") -> list[float]:
    """Each config's wall, trained here one after the other (1 thread)."""
    from pipeline.sweep.trial import run_trial, trial_seed

    walls = []
    for i, rate in enumerate(lrs):
        one = params_mod.with_overrides(mp, {"train.learning_rate": rate}, 3, (28, 28))
        t = time.perf_counter()
        run_trial({}, one, train, val, seed=trial_seed(0, i), cpus=1, report=lambda r: None)
        walls.append(time.perf_counter() - t)
        print(f"{label} trial {i}: {walls[-1]:.1f} s", flush=True)
    return walls


def _clock():
    from ray import tune

    class TrialClock(tune.Callback):
        """Driver-side wall of each trial, by trial_index: from start to its last result."""

        def __init__(self):
            self.start: dict[str, float] = {}
            self.walls: dict[int, float] = {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.start[trial.trial_id] = time.perf_counter()

        def on_trial_complete(self, iteration, trials, trial, **info):
            wall = time.perf_counter() - self.start[trial.trial_id]
            self.walls[int(trial.config["trial_index"])] = wall

    return TrialClock()


def on_ray(
    mp, train, val, lrs: list[float], concurrent: int, name: str = ""
) -> tuple[float, dict[int, float], dict[int, float]]:
    """The sweep's wall, each trial's wall as the driver sees it and each trial's training
    wall as its worker measures it, ``concurrent`` trials at a time."""
    from ray import tune

    from pipeline.sweep import runtime
    from pipeline.sweep.spec import TRIAL_INDEX
    from pipeline.sweep.trial import TRAIN_S, train_trial

    trainable = tune.with_resources(
        tune.with_parameters(
            train_trial, preset=params_mod.to_dict(mp), train=train, val=val, n_classes=3
        ),
        {"cpu": 1},
    )
    clock = _clock()
    space = {  # the same (index, rate) pairs as in_process: same seeds, same configs
        TRIAL_INDEX: tune.grid_search(list(range(len(lrs)))),
        "train.learning_rate": tune.sample_from(lambda config: lrs[config[TRIAL_INDEX]]),
    }
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrent, reuse_actors=True),
        run_config=tune.RunConfig(
            name=name or f"bench-{concurrent}",
            storage_path=str(runtime.storage_dir()),
            callbacks=[clock],
            verbose=0,
        ),
    )
    t = time.perf_counter()
    grid = tuner.fit()
    seconds = time.perf_counter() - t
    if grid.num_errors or any(r.metrics.get("trial_error") for r in grid):
        raise RuntimeError(f"bench-sweep: a trial failed at {concurrent} at a time")
    inner = {int(r.config[TRIAL_INDEX]): float(r.metrics[TRAIN_S]) for r in grid}
    return seconds, clock.walls, inner


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.sweep.bench", description=__doc__)
    ap.add_argument("--trials", type=int, default=TRIALS)
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--images", type=int, default=IMAGES, help="training images a trial")
    args = ap.parse_args(argv)
    if min(args.trials, args.epochs, args.images) < 1:
        ap.error("--trials, --epochs and --images must be at least 1")

    from pipeline.sweep import runtime

    runtime.loopback()  # before Ray's first import
    os.environ.setdefault("RAY_worker_niceness", "0")  # Ray's default 15: same as in-process
    params = params_mod.load()
    mp = _preset(params, args.epochs)
    train, val, source = _data(params, args.images)
    lrs = rates(args.trials)
    short = mp.model_copy(update={"train": mp.train.model_copy(update={"epochs": 1})})
    load_before = os.getloadavg()
    in_process(short, train, val, lrs[:1], "warm-up (not counted)")  # TensorFlow's import
    before = in_process(mp, train, val, lrs, "in-process (before Ray)")
    print(f"in-process: {len(lrs)} trials in {sum(before):.1f} s", flush=True)
    ray_init = runtime.start_ray(num_cpus=2)  # one Ray for both settings
    warm, _, _ = on_ray(short, train, val, lrs[:2], 2, "bench-warm-up")  # Ray's first use
    print(f"Ray warm-up (2 trials of 1 epoch, not counted): {warm:.1f} s", flush=True)
    one, walls, inner = on_ray(mp, train, val, lrs, 1)
    print(f"Ray, 1 at a time: {one:.1f} s", flush=True)
    two, _, _ = on_ray(mp, train, val, lrs, 2)
    print(f"Ray, 2 at a time: {two:.1f} s", flush=True)
    import ray

    ray.shutdown()
    # In-process again after Ray: the reference is each config's mean of both, so that a
    # drift of the machine's speed during the run does not count as Ray's.
    after = in_process(mp, train, val, lrs, "in-process (after Ray)")
    load_after = os.getloadavg()
    inproc = [(a + b) / 2 for a, b in zip(before, after, strict=True)]
    n = range(len(lrs))
    per_trial = [100 * (walls[i] / inproc[i] - 1) for i in n]
    # Where it goes: the driver's wall minus the worker's own training wall (Tune's
    # scheduling, results, actor reuse) and the worker's training against in-process.
    tune_cost = [100 * (walls[i] - inner[i]) / inproc[i] for i in n]
    in_worker = [100 * (inner[i] / inproc[i] - 1) for i in n]
    result = {
        "trials": len(lrs),
        "epochs": args.epochs,
        "images": len(train),
        "data": source,
        "in_process_s": round(sum(inproc), 2),
        "in_process_before_s": round(sum(before), 2),
        "in_process_after_s": round(sum(after), 2),
        "ray_1_s": round(one, 2),
        "ray_2_s": round(two, 2),
        "ray_init_s": round(ray_init, 2),
        "trial_s_in_process": [round(x, 2) for x in inproc],
        "trial_s_in_process_before": [round(x, 2) for x in before],
        "trial_s_in_process_after": [round(x, 2) for x in after],
        "trial_s_ray": [round(walls[i], 2) for i in n],
        "trial_s_in_worker": [round(inner[i], 2) for i in n],
        "tune_cost_pct": round(statistics.fmean(tune_cost), 1),
        "in_worker_slowdown_pct": round(statistics.fmean(in_worker), 1),
        "speedup": round(one / two, 3),
        "overhead_pct": round(statistics.fmean(per_trial), 1),
        "overhead_pct_median": round(statistics.median(per_trial), 1),
        "overhead_pct_run": round(100 * (one / sum(inproc) - 1), 1),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
    }
    _write_doc(result)
    print(json.dumps(result), flush=True)
    return 0


def _write_doc(r: dict) -> None:
    from pipeline.devtools.benchmarks import this_machine, write_section

    rows = [
        (
            "in-process, no Ray",
            r["in_process_s"],
            f"mean of a run before Ray ({r['in_process_before_s']:.1f} s) and one after "
            f"({r['in_process_after_s']:.1f} s)",
        ),
        (
            "Ray, 1 trial at a time",
            r["ray_1_s"],
            f"overhead per trial {r['overhead_pct']}% (mean; median "
            f"{r['overhead_pct_median']}%; whole run {r['overhead_pct_run']}%): Tune's own "
            f"{r['tune_cost_pct']}% (driver's wall - the worker's training wall) + training "
            f"in the worker {r['in_worker_slowdown_pct']}% slower than in-process",
        ),
        ("Ray, 2 trials at a time", r["ray_2_s"], f"speed-up {r['speedup']}x over 1 at a time"),
    ]
    pairs = zip(r["trial_s_in_process_before"], r["trial_s_in_process_after"], strict=True)
    noise = max(abs(b / a - 1) for a, b in pairs)
    walls = r["trial_s_in_process_before"] + r["trial_s_in_process_after"]
    table = "| run | seconds | |\n| --- | --- | --- |\n" + "\n".join(
        f"| {a} | {b:.1f} | {c} |" for a, b, c in rows
    )
    text = (
        f"{r['trials']} trials of `{PRESET}` ({r['epochs']} epochs of {r['images']} images "
        f"({r['data']}), fixed learning rates, no ASHA, 1 CPU and 1 thread a trial; "
        f"`make bench-sweep`). One local Ray for both settings, started in {r['ray_init_s']:.1f} "
        f"s; both sides warmed up first (not counted). Overhead per trial: (the trial's wall in "
        f"Ray, 1 at a time, from start to end as the driver sees it - the same config "
        f"in-process) / in-process; per-trial walls are in the JSON line `make bench-sweep` "
        f"prints. "
        f"Load average before/after: {r['loadavg_before']} / {r['loadavg_after']} on "
        f"{r['cpus']} CPUs: the goals (speed-up >= 1.7x, overhead <= 10%) need idle cores to "
        f"judge. The machine's own noise: the same config in-process took up to "
        f"{100 * noise:.0f}% longer or shorter after Ray than before, and the 16 in-process "
        f"trials (identical work but the learning rate) took {min(walls):.1f}-{max(walls):.1f} "
        f"s; an overhead smaller than that noise is not resolved by one run.\n\n{table}"
    )
    write_section("sweep", text, this_machine(), title="Sweeps on Ray Tune (make bench-sweep)")


if __name__ == "__main__":
    raise SystemExit(main())
