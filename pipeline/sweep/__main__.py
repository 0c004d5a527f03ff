"""``python -m pipeline.sweep NAME [--trials N] [--resume] [--apply]`` (README "Sweeps")."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.sweep",
        description="Run a hyperparameter sweep of params.yaml (sweeps.NAME) on Ray Tune.",
    )
    ap.add_argument("name", help="a key of sweeps: in params.yaml")
    ap.add_argument("--trials", type=int, help="number of trials (default: the sweep's)")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    ap.add_argument("--apply", action="store_true", help="run the best config as `dvc exp run`")
    args = ap.parse_args(argv)
    if args.trials is not None and args.trials < 1:
        print("error: --trials must be at least 1", file=sys.stderr)
        return 2

    user_env = dict(os.environ)  # for --apply: without what starting Ray sets
    from pipeline.core import params as params_mod
    from pipeline.sweep import run
    from pipeline.tracking import TrackingError

    try:
        params = params_mod.load()
        best = run.run_sweep(params, args.name, trials=args.trials, resume=args.resume)
    except (params_mod.ParamsError, run.SweepError, TrackingError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if best is None:
        return 130
    print(
        f"best {best['metric']} {best['value']:.4f} (trial {best['trial_index']}), "
        f"MLflow parent run {best['parent_run_id']}"
    )
    print(best["dvc_command"], flush=True)
    if not args.apply:
        return 0
    import ray

    ray.shutdown()  # the stages need the cores
    return run.apply(best, env=user_env)


if __name__ == "__main__":
    sys.exit(main())
