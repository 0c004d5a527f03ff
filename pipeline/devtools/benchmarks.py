"""docs/benchmarks.md from measured results: ``make benchmarks``.

    python -m pipeline.devtools.benchmarks [SECTION ...] [--saved]

Each section of docs/benchmarks.md is written by one source between the markers
``<!-- benchmarks:begin NAME -->`` and ``<!-- benchmarks:end NAME -->``, headed with the date
of its figures and the machine (lscpu's model name and core count); the other sections and
the text outside the markers are kept. Sources (all by default):

- ``default-run``: the outputs of the last ``make repro``, checked against ``dvc.lock``:
  ``metrics/<model>.json`` (test accuracy) and ``models/<model>/history.csv`` (epochs,
  seconds an epoch, training images a second, as logged to MLflow).
- ``bench`` and ``bench-keras``: ``python -m pipeline.bench scratch --json`` and
  ``python -m pipeline.devtools.bench_keras``, run now; the JSON of their last line is saved
  to ``reports/bench/<name>.json`` (git-ignored). ``--saved`` reads that file instead.

Other commands write their own section with ``write_section(name, markdown, machine)``.
A source that cannot be written is one line naming why; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from pipeline.core import config
from pipeline.core import params as params_mod
from pipeline.core.dvc_outs import cache_files, lock_stages
from pipeline.core.io import atomic_write, file_digest

DOC = config.ROOT / "docs" / "benchmarks.md"
SAVED_DIR = config.ROOT / "reports" / "bench"
HEADER = (
    "# Benchmarks\n\n"
    "Written by `make benchmarks` (pipeline/devtools/benchmarks.py); do not edit between the "
    "markers.\n"
)
_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


class BenchmarkError(RuntimeError):
    """A section that cannot be written: the message names what is missing."""


@dataclass(frozen=True)
class Machine:
    """The CPU the figures were measured on."""

    model: str
    cores: int
    threads: int

    def __str__(self) -> str:
        extra = f" ({self.threads} threads)" if self.threads != self.cores else ""
        return f"{self.model}, {self.cores} cores{extra}"


def _lscpu() -> dict[str, str]:
    if shutil.which("lscpu") is None:
        return {}
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False,
                         env={**os.environ, "LC_ALL": "C"}).stdout  # fmt: skip
    return {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines())}


def this_machine() -> Machine:
    """lscpu's model name and core count (cores per socket times sockets) of this machine."""
    info = _lscpu()
    model = info.get("Model name", "")
    if not model and Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    threads = int(info.get("CPU(s)", 0) or 0) or os.cpu_count() or 1
    try:
        cores = int(info["Core(s) per socket"]) * int(info.get("Socket(s)", 1))
    except (KeyError, ValueError):
        cores = threads
    return Machine(model or "unknown CPU", cores, threads)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- benchmarks:begin {name} -->", f"<!-- benchmarks:end {name} -->"


def write_section(
    name: str,
    markdown: str,
    machine: Machine | str,
    *,
    title: str | None = None,
    date: dt.date | str | None = None,
    path: Path | None = None,
) -> Path:
    """Write section ``name`` of docs/benchmarks.md (``path``): a ``## title`` heading, the
    date of the figures (default today) and ``machine``, then ``markdown``. The section
    replaces its previous version in place, or is appended; the rest of the file is kept."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"section name {name!r}: lowercase letters, digits and '-' only")
    path = Path(path or DOC)
    when = str(date or dt.date.today())
    begin, end = _markers(name)
    body = (
        f"{begin}\n## {title or name}\n\n*Measured {when} on {machine}.*\n\n"
        f"{markdown.strip()}\n{end}\n"
    )
    text = path.read_text() if path.is_file() else HEADER
    found = re.compile(rf"^{re.escape(begin)}\n.*?^{re.escape(end)}\n?", re.S | re.M)
    if found.search(text):
        text = found.sub(lambda _: body, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + body
    atomic_write(path, text)
    return path


def _table(header: str, rows: list[list[str]]) -> str:
    """A markdown table; ``header`` is the column titles joined by ``|``."""
    titles = header.split("|")
    lines = ["| " + " | ".join(titles) + " |", "|" + " --- |" * len(titles)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _dir_listing(cache: Path, md5: str) -> dict[str, str] | None:
    """relpath -> md5 of a directory out, from DVC's cache (None when the cache lacks it)."""
    listing = cache / md5[:2] / md5[2:]
    if not listing.is_file():
        return None
    return {e["relpath"]: e["md5"] for e in json.loads(listing.read_text())}


def _locked_md5(stages: dict, stage: str, out: str) -> str | None:
    for o in (stages.get(stage) or {}).get("outs", []):
        if o.get("path") == out:
            return o.get("md5")
    return None


def default_run(root: Path = config.ROOT) -> tuple[str, str, dt.date]:
    """(title, markdown, date) of the last ``make repro``: every model dvc.lock has an
    evaluate@ stage for, its metrics and history as dvc.lock records them."""
    stages = lock_stages(root)
    if not stages:
        raise BenchmarkError("dvc.lock: no stages recorded (run `make repro` first)")
    p = params_mod.load(config.params_path(root))
    models = [m for m in p.models if f"evaluate@{m}" in stages]
    if not models:
        raise BenchmarkError("dvc.lock records no evaluate@ stage (run `make repro` first)")
    try:
        cache: Path | None = cache_files(root)
    except Exception:  # not a DVC repository, or DVC cannot open it: nothing to check against
        cache = None
    rows, stamps, unchecked = [], [], []
    for m in models:
        metrics = config.metrics_file(m, root)
        history = config.model_dir(m, root) / config.HISTORY_CSV
        rel_metrics, rel_model = (str(x.relative_to(root)) for x in (metrics, history.parent))
        for path in (metrics, history):
            if not path.is_file():
                raise BenchmarkError(f"{path.relative_to(root)}: missing (run `make repro`)")
        if file_digest(metrics, "md5") != _locked_md5(stages, f"evaluate@{m}", rel_metrics):
            raise BenchmarkError(f"{rel_metrics}: not the file dvc.lock records (run `make repro`)")
        model_md5 = _locked_md5(stages, f"train@{m}", rel_model) or ""
        listing = _dir_listing(cache, model_md5) if cache and model_md5.endswith(".dir") else None
        if listing is None:
            unchecked.append(m)
        elif listing.get(history.name) != file_digest(history, "md5"):
            raise BenchmarkError(
                f"{history.relative_to(root)}: not the file dvc.lock records (run `make repro`)"
            )
        acc = json.loads(metrics.read_text())["accuracy"]
        h = pd.read_csv(history)
        stamps.append(history.stat().st_mtime)
        mp = p.models[m]
        if "epoch_seconds" in h:
            sec, ips = h["epoch_seconds"], h["images_per_second"]
            speed = [f"{sec.median():,.1f}", f"{ips.median():,.0f}", f"{sec.sum():,.0f} s"]
        else:  # an ensemble trains no epochs: its one row is the fit of its weights
            speed = ["-", "-", "-"]
        rows.append([f"`{m}`", mp.family, mp.dataset, str(len(h)), f"{100 * acc:.2f}%", *speed])
    md = [
        "Every model of the last `make repro` (`dvc.lock`): test accuracy on the full test "
        "set (`metrics/<model>.json`); epochs, median seconds an epoch, median training images "
        "a second and the sum of the epochs' seconds (the training loop only, without start-up "
        "and model logging) from `models/<model>/history.csv`, as logged to MLflow (an ensemble "
        "trains no epochs: its one history row is the fit of its weights, no timing). The date "
        "is that of the history files; the machine is the one that ran `make benchmarks`.",
        "",
        _table("preset|family|dataset|epochs|test accuracy|s / epoch|images / s|training", rows),
    ]
    if unchecked:
        md += ["", f"Not checked against `dvc.lock` (DVC's cache lacks the model listing): "
               f"{', '.join(unchecked)}."]  # fmt: skip
    when = dt.date.fromtimestamp(max(stamps))
    return "The default run (`make repro`)", "\n".join(md), when


def bench_markdown(result: dict) -> tuple[str, str]:
    """(title, markdown) of ``make bench``'s JSON."""
    row = [f"{result[k]:,.0f}" for k in ("scratch_images_per_s", "keras_images_per_s")]
    row.append(f"{result['ratio']:.2f}")
    md = (
        "`make bench` (`python -m pipeline.bench scratch --json`): the NumPy "
        "`scratch_dropout_cnn` against its Keras twin `keras_small_cnn` (the same network), "
        f"one epoch of {result['images']:,} prepared training images each per round, rounds "
        f"interleaved, median of {result['rounds']}; no augmentation on either side.\n\n"
        + _table("scratch images / s|Keras images / s|ratio (scratch / Keras)", [row])
    )
    return "Scratch against Keras (`make bench`)", md


def bench_keras_markdown(result: dict) -> tuple[str, str]:
    """(title, markdown) of ``make bench-keras``'s JSON."""
    rows = [
        [f"`{name}`", str(r["batch_size"]), f"{r['pipeline_images_per_s']:,.0f}",
         f"{r['plain_fit_images_per_s']:,.0f}", f"{r['ratio']:.2f}",
         f"{r['seconds_per_epoch']:,.1f} ({r['train_images']:,} images)"]
        for name, r in result.items()
    ]  # fmt: skip
    md = (
        "`make bench-keras` (`python -m pipeline.devtools.bench_keras`): each keras and custom "
        "preset's network trained on random images through the pipeline's feed (`EpochArrays`, "
        "with the preset's augmentation) and through a plain `model.fit` on the arrays, in turn; "
        "the best epoch of each. Seconds an epoch are extrapolated to the preset's training "
        "split.\n\n"
        + _table(
            "preset|batch|pipeline's feed images / s|plain fit images / s|ratio|s / epoch", rows
        )
    )
    return "The Keras feed against a plain fit (`make bench-keras`)", md


@dataclass(frozen=True)
class Command:
    """A benchmark command whose last line is JSON, and how its section is written."""

    argv: tuple[str, ...]
    render: Callable[[dict], tuple[str, str]]


COMMANDS = {
    "bench": Command(("-m", "pipeline.bench", "scratch", "--json"), bench_markdown),
    "bench-keras": Command(("-m", "pipeline.devtools.bench_keras"), bench_keras_markdown),
}
SECTIONS = ("default-run", *COMMANDS)


def run_command(name: str, saved_dir: Path = SAVED_DIR) -> dict:
    """Run benchmark ``name`` (its output passes through), save its JSON last line with the
    date and machine to ``saved_dir/<name>.json``, and return that record."""
    argv = [sys.executable, *COMMANDS[name].argv]
    shown = "python " + " ".join(COMMANDS[name].argv)
    print(f"benchmarks: running {shown}", flush=True)
    load = os.getloadavg()[0]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=config.ROOT)
    last = ""
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        if line.strip():
            last = line.strip()
    if proc.wait() != 0:
        raise BenchmarkError(f"`{shown}` exited with code {proc.returncode}")
    try:
        result = json.loads(last)
    except json.JSONDecodeError:
        raise BenchmarkError(f"`{shown}`: its last line is not JSON: {last[:200]!r}") from None
    record = {
        "command": shown,
        "date": dt.date.today().isoformat(),
        "machine": asdict(this_machine()),
        "load_average_before": round(load, 2),
        "result": result,
    }
    saved_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(saved_dir / f"{name}.json", json.dumps(record, indent=2) + "\n")
    return record


def saved(name: str, saved_dir: Path = SAVED_DIR) -> dict:
    path = saved_dir / f"{name}.json"
    if not path.is_file():
        shown = path.relative_to(config.ROOT) if path.is_relative_to(config.ROOT) else path
        raise BenchmarkError(f"{shown}: not found (run `make benchmarks` without --saved)")
    return json.loads(path.read_text())


def command_section(name: str, record: dict, path: Path | None = None) -> None:
    title, md = COMMANDS[name].render(record["result"])
    load, machine = record.get("load_average_before"), Machine(**record["machine"])
    if load is not None:
        md += f"\n\nOne-minute load average as it started: {load} ({machine.threads} CPUs)"
        busy = load > machine.threads / 2
        md += ": the machine was busy, the figures are lower than idle." if busy else "."
    write_section(name, md, machine, title=title, date=record["date"], path=path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.devtools.benchmarks", description=__doc__.splitlines()[0]
    )
    ap.add_argument(
        "sections", nargs="*", metavar="SECTION", help=f"default: all of {', '.join(SECTIONS)}"
    )
    ap.add_argument(
        "--saved", action="store_true", help="read reports/bench/<name>.json, run nothing"
    )
    args = ap.parse_args(argv)
    for name in args.sections:
        if name not in SECTIONS:
            ap.error(f"{name}: no such section (known: {', '.join(SECTIONS)})")
    failed = 0
    for name in args.sections or SECTIONS:
        try:
            if name == "default-run":
                title, md, when = default_run()
                write_section(name, md, this_machine(), title=title, date=when)
            else:
                record = saved(name) if args.saved else run_command(name)
                command_section(name, record)
            print(f"benchmarks: {name}: written to {DOC.relative_to(config.ROOT)}")
        except BenchmarkError as exc:
            print(f"benchmarks: {name}: not written: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
