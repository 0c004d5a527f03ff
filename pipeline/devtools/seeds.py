"""Run-to-run spread of one preset: ``make seeds PRESET=<preset> N=3``.

    python -m pipeline.devtools.seeds PRESET [--n 3] [--seeds 1,2,3] [--no-doc]

Each seed is one ``dvc exp run --temp -n seeds-<preset>-<study>-s<seed> -S seed=<seed>
evaluate@<preset>``: the project's own stages (prepare@ of the preset's dataset, train@,
evaluate@) in a temporary copy, so the workspace, ``dvc.lock`` and ``metrics/`` stay as they
are. The seed draws the weights' initialisation, the batches and the augmentation, and also
the validation split (prepare@); the test split is the same images for every seed. The
figures are read from each experiment's ``metrics/<preset>.json`` (its git commit under
``refs/exps``). The MLflow runs carry ``dvc_exp_name`` and ``repro_id=seeds-<preset>-<study>``
(one id for the study); plot does not run, and the promotion gate never makes a DVC
experiment ``champion`` (pipeline/tracking/gate.py), so a study cannot move it.

A progress line per seed, then a table (seed, test accuracy, its 95% Wilson interval,
errors, wall time) and mean ± standard deviation (n-1) of the test accuracy; the last line
is JSON. The figures go to section ``seeds-<preset>`` of docs/benchmarks.md
(pipeline/devtools/benchmarks.py) and the JSON to reports/bench/seeds-<preset>.json; each
experiment's DVC output to reports/bench/seeds-<preset>-s<seed>.log.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.core import config
from pipeline.core import params as params_mod
from pipeline.devtools import benchmarks

DEFAULT_N = 3


class SeedsError(RuntimeError):
    """A study that cannot run or finish: the message names what and where."""


@dataclass
class SeedResult:
    seed: int
    experiment: str  # the DVC experiment's name
    accuracy: float
    ci95: tuple[float, float] | None
    errors: int | None
    n_test: int | None
    seconds: float  # wall time of its dvc exp run
    run_id: str | None  # the MLflow training run


def parse_seeds(text: str | None, n: int, base: int) -> list[int]:
    """``--seeds 1,2,3`` as given, else ``base + 1 .. base + n`` (the committed run is seed
    ``base``: each seed of the study trains anew)."""
    if text:
        try:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        except ValueError:
            raise SeedsError(f"--seeds {text!r}: expected integers separated by commas") from None
    else:
        if n < 2:
            raise SeedsError(f"--n {n}: a spread needs at least 2 seeds")
        seeds = [base + i for i in range(1, n + 1)]
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise SeedsError(f"seeds {seeds}: need at least 2 distinct seeds")
    return seeds


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1)."""
    return statistics.fmean(values), statistics.stdev(values)


def experiment_rev(root: Path, name: str) -> str:
    """The commit DVC made for experiment ``name`` (``refs/exps/.../<name>``)."""
    out = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    found = [sha for ref, _, sha in (ln.partition(" ") for ln in out.splitlines())
             if ref.rsplit("/", 1)[-1] == name]  # fmt: skip
    if not found:
        raise SeedsError(f"experiment {name}: no refs/exps entry after dvc exp run")
    return found[-1]


def experiment_metrics(root: Path, rev: str, preset: str) -> dict:
    """``metrics/<preset>.json`` as experiment commit ``rev`` holds it."""
    rel = config.metrics_file(preset, root).relative_to(root).as_posix()
    out = subprocess.run(
        ["git", "show", f"{rev}:{rel}"], cwd=root, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SeedsError(f"experiment {rev[:7]}: no {rel} ({out.stderr.strip()})")
    return json.loads(out.stdout)


def training_run(preset: str, experiment: str) -> str | None:
    """The MLflow run of ``preset`` in DVC experiment ``experiment`` (None: not found)."""
    from pipeline import tracking

    try:
        return tracking.find_run(f"{preset}@{experiment}").info.run_id
    except (tracking.RunLookupError, tracking.TrackingError):
        return None


def run_seed(
    root: Path, preset: str, seed: int, name: str, study: str, log: Path
) -> tuple[dict, float]:
    """One ``dvc exp run --temp`` of ``evaluate@<preset>`` with ``seed``; its metrics and
    wall time. DVC's output goes to ``log``."""
    cmd = [
        str(root / "bin" / "dvc"), "exp", "run", "--temp", "-n", name,
        "-S", f"seed={seed}", f"evaluate@{preset}",
    ]  # fmt: skip
    env = os.environ | {"PIPELINE_REPRO_ID": study}
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w") as out:
        rc = subprocess.call(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        raise SeedsError(f"seed {seed}: dvc exp run failed (exit {rc}): {tail[0]} (see {log})")
    return experiment_metrics(root, experiment_rev(root, name), preset), seconds


def table(preset: str, results: list[SeedResult]) -> str:
    """The markdown table of the seeds and their mean ± std."""
    lines = [
        "| seed | test accuracy | 95% Wilson interval | errors | wall time | DVC experiment |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        ci = f"{r.ci95[0]:.4f} – {r.ci95[1]:.4f}" if r.ci95 else "n/a"
        errors = f"{r.errors} of {r.n_test}" if r.errors is not None else "n/a"
        lines.append(
            f"| {r.seed} | {r.accuracy:.4f} | {ci} | {errors} | {r.seconds:.0f} s | "
            f"`{r.experiment}` |"
        )
    mean, std = spread([r.accuracy for r in results])
    lines += [
        "",
        f"`{preset}`: test accuracy **{mean:.4f} ± {std:.4f}** (mean ± standard deviation "
        f"over {len(results)} seeds; `make seeds PRESET={preset} N={len(results)}`).",
    ]
    return "\n".join(lines)


def study(
    preset: str,
    seeds: list[int],
    root: Path = config.ROOT,
    doc: Path | None = None,
    out=sys.stdout,
) -> dict:
    """Run ``preset`` once per seed as a temporary DVC experiment; print a line per seed,
    the table and the JSON summary (last line); write the docs section unless ``doc`` is
    False-y and ``reports/bench/seeds-<preset>.json``. The summary."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    study_id = f"seeds-{preset}-{stamp}"
    bench = root / "reports" / "bench"
    results = []
    for i, seed in enumerate(seeds, 1):
        name = f"{study_id}-s{seed}"
        print(f"seeds: {preset} seed {seed} ({i}/{len(seeds)}): dvc exp run --temp -n {name} "
              f"-S seed={seed} evaluate@{preset}", file=out, flush=True)  # fmt: skip
        log = bench / f"seeds-{preset}-s{seed}.log"
        m, seconds = run_seed(root, preset, seed, name, study_id, log)
        low, high = m.get("accuracy_ci95_low"), m.get("accuracy_ci95_high")
        r = SeedResult(
            seed=seed,
            experiment=name,
            accuracy=float(m["accuracy"]),
            ci95=(float(low), float(high)) if low is not None and high is not None else None,
            errors=m.get("errors"),
            n_test=m.get("n_test"),
            seconds=seconds,
            run_id=training_run(preset, name),
        )
        results.append(r)
        print(f"seeds: {preset} seed {seed}: test accuracy {r.accuracy:.4f} ({r.seconds:.0f} s, "
              f"MLflow run {r.run_id or 'not found'})", file=out, flush=True)  # fmt: skip
    mean, std = spread([r.accuracy for r in results])
    text = table(preset, results)
    print(text, file=out)
    summary = {
        "preset": preset,
        "study": study_id,
        "n": len(results),
        "mean": round(mean, 6),
        "std": round(std, 6),
        "seeds": [asdict(r) for r in results],
    }
    if doc is not False:
        machine = benchmarks.this_machine()
        path = benchmarks.write_section(
            f"seeds-{preset.replace('_', '-')}", text, machine,
            title=f"Seeds: {preset}", path=doc or root / "docs" / "benchmarks.md",
        )  # fmt: skip
        print(f"seeds: wrote {path}", file=out)
    bench.mkdir(parents=True, exist_ok=True)
    (bench / f"seeds-{preset}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), file=out, flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.devtools.seeds",
        description="Rerun a preset with N seeds (temporary DVC experiments of its stages) and "
        "report the mean ± std of its test accuracy.",
    )
    ap.add_argument("preset", help="a model of params.yaml (models:)")
    ap.add_argument("--n", type=int, default=DEFAULT_N, help="how many seeds (default 3)")
    ap.add_argument("--seeds", help="the seeds, comma-separated (default: seed+1 .. seed+N)")
    ap.add_argument("--no-doc", action="store_true", help="leave docs/benchmarks.md alone")
    args = ap.parse_args(argv)
    try:
        params = params_mod.load(config.params_path(config.ROOT))
        if args.preset not in params.models:
            known = ", ".join(params.models)
            raise SeedsError(f"preset {args.preset!r}: not in params.yaml models: ({known})")
        seeds = parse_seeds(args.seeds, args.n, params.seed)
        study(args.preset, seeds, doc=False if args.no_doc else None)
    except (SeedsError, benchmarks.BenchmarkError, OSError, ValueError) as exc:
        print(f"seeds: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("seeds: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
