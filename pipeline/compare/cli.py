"""Compare two MLflow runs image by image: ``python -m pipeline.compare A B [-o report.html]``.

A and B are each an MLflow run id, ``<preset>`` (the newest run of that preset) or
``<preset>@<dvc exp name>`` (the newest run of that preset in that DVC experiment). They may
be runs of different presets as long as both were trained on the same class set.

Everything comes from the tracking store (``MLFLOW_TRACKING_URI``, else the project's
``mlflow.db``): params, tags, test metrics, per-epoch validation metrics and each run's
per-image predictions (``evaluation/predictions.csv``, logged by evaluate@<model>), so the
report can be rebuilt on any machine that reaches the store. Only the thumbnails need the
test images themselves, which are not in the store: they come from the local
``data/prepared/<dataset>/test.npz`` when its labels match the runs' predictions image for
image, and the report says so when they cannot.

Writes one self-contained HTML page (pipeline/compare/report.py) to ``-o`` or
``reports/compare/`` and logs it to both runs under ``compare/``; prints both accuracies with
their 95% Wilson intervals and the headline (McNemar's exact test on the images where the
runs disagree: significant at 0.05 or within noise). Bad input (an unknown run,
a run without predictions, runs on different class sets or test sets) prints one line and
exits 1, writing nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import tracking
from pipeline.compare import analysis, report
from pipeline.compare.analysis import CompareError, RunData
from pipeline.core import config
from pipeline.core.io import atomic_write
from pipeline.data.prepared import load_meta, load_split

PREDICTIONS_ARTIFACT = f"{config.EVALUATION_ARTIFACTS}/{config.PREDICTIONS_CSV}"


def _predictions(run_id: str, label: str, name: str, tmp: Path) -> tuple[np.ndarray, np.ndarray]:
    path = tracking.download_run_artifact(run_id, PREDICTIONS_ARTIFACT, tmp / label)
    if path is None:
        raise CompareError(
            f"{label}: run {run_id} ({name}) has no per-image predictions "
            f"({PREDICTIONS_ARTIFACT}); run `dvc repro evaluate@{name}` for it first"
        )
    frame = pd.read_csv(path)
    if not {"actual", "predicted"} <= set(frame.columns):
        raise CompareError(
            f"{label}: {PREDICTIONS_ARTIFACT} of run {run_id} has columns "
            f"{list(frame.columns)}, expected actual and predicted"
        )
    if "index" in frame.columns:  # rows in test-image order whatever the file's order
        frame = frame.sort_values("index", kind="stable")
    return frame["actual"].to_numpy(np.int64), frame["predicted"].to_numpy(np.int64)


def fetch(label: str, spec: str, tmp: Path) -> RunData:
    """Everything the report needs of the run ``spec`` names."""
    try:
        run = tracking.find_run(spec)
    except tracking.RunLookupError as exc:
        raise tracking.RunLookupError(f"{label}: {exc}") from None
    run_id = run.info.run_id
    tags = dict(run.data.tags)
    name = tags.get("preset") or run.info.run_name or run_id
    actual, predicted = _predictions(run_id, label, name, tmp)
    history = {m: tracking.metric_history(run_id, m) for m in analysis.CURVE_METRICS}
    return RunData(
        label=label,
        run_id=run_id,
        params=dict(run.data.params),
        tags=tags,
        metrics=dict(run.data.metrics),
        history=history,
        actual=actual,
        predicted=predicted,
        start_time=run.info.start_time,
        store=store_label(),
    )


def store_label() -> str:
    """The store as the report names it: the embedded one of this checkout by its file name
    (the page should not carry a machine's paths), any other by its URI."""
    uri = tracking.tracking_uri()
    own = f"sqlite:///{config.mlflow_db(tracking.store_root())}"
    return f"{config.mlflow_db(Path('.')).name} of this project" if uri == own else uri


def common_classes(a: RunData, b: RunData) -> list[str]:
    classes = {}
    for run in (a, b):
        found = analysis.classes_of(run.params)
        if found is None:
            raise CompareError(
                f"{run.label}: run {run.run_id} ({run.name}) logged no dataset.classes param; "
                "it was not made by this pipeline's train stage"
            )
        classes[run.label] = found
    if classes["A"] != classes["B"]:
        raise CompareError(
            f"A {a.short} was trained on {a.tags.get('dataset', '?')} (classes "
            f"{', '.join(classes['A'])}), B {b.short} on {b.tags.get('dataset', '?')} "
            f"(classes {', '.join(classes['B'])}): runs on different class sets cannot be "
            "compared"
        )
    return classes["A"]


def local_images(dataset: str, classes: list[str], actual: np.ndarray, root: Path = config.ROOT):
    """The test images of ``dataset`` from data/prepared/ when they are the runs' test set
    (same classes, same labels image for image); else None and the reason."""
    folder = config.prepared_dir(dataset, root)
    rel = config.split_file(folder, "test").relative_to(root)
    restore = f"`dvc pull` or `dvc repro prepare@{dataset}` restores them"
    if not config.split_file(folder, "test").is_file():
        return None, (
            f"No thumbnails: the test images are not in the MLflow store and {rel} is not on "
            f"this machine; {restore}."
        )
    try:
        meta_classes = [str(c) for c in load_meta(folder)["classes"]]
        test = load_split(folder, "test")
    except (OSError, ValueError, KeyError) as exc:
        return None, f"No thumbnails: {rel} cannot be read ({exc})."
    if meta_classes != classes or not np.array_equal(test.y, actual):
        return None, (
            f"No thumbnails: {rel} on this machine is not the test set these runs were scored "
            f"on (its labels differ from the runs' predictions); {restore} at the runs' commit."
        )
    return test.x, ""


def artifact_name(a: RunData, b: RunData) -> str:
    return f"{a.name}-{a.run_id[:8]}_vs_{b.name}-{b.run_id[:8]}.html"


def to_indices(digits: np.ndarray, classes: list[str]) -> np.ndarray:
    """Digits as written by evaluate@ -> class indices 0..k-1 (-1 for a digit not among
    ``classes``, which analyse reports)."""
    lookup = np.full(256, -1, dtype=np.int64)
    lookup[[int(c) for c in classes]] = np.arange(len(classes))
    inside = (digits >= 0) & (digits < len(lookup))
    return np.where(inside, lookup[np.clip(digits, 0, len(lookup) - 1)], -1)


class SameRunError(CompareError):
    """A and B name the same run."""


def build(spec_a: str, spec_b: str, root: Path = config.ROOT) -> analysis.Comparison:
    with tempfile.TemporaryDirectory(prefix="compare-") as tmp:
        a = fetch("A", spec_a, Path(tmp))
        b = fetch("B", spec_b, Path(tmp))
    if a.run_id == b.run_id:
        raise SameRunError(
            f"A ({spec_a}) and B ({spec_b}) are the same run {a.run_id} ({a.name}): nothing "
            "to compare; name two different runs"
        )
    classes = common_classes(a, b)
    for run in (a, b):  # predictions.csv holds digits (0, 2, 5): the report counts in indices
        run.actual, run.predicted = (
            to_indices(run.actual, classes),
            to_indices(run.predicted, classes),
        )
    comparison = analysis.analyse(a, b, classes)
    dataset = a.tags.get("dataset") or b.tags.get("dataset")
    if dataset:
        comparison.images, comparison.images_note = local_images(dataset, classes, a.actual, root)
    else:
        comparison.images_note = "No thumbnails: the runs do not name their dataset."
    return comparison


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.compare",
        description="Compare two MLflow runs image by image; writes one self-contained HTML "
        "report and logs it to both runs under compare/.",
    )
    for name in ("A", "B"):
        parser.add_argument(
            name.lower(),
            metavar=name,
            help="an MLflow run id, <preset> (its newest run) or <preset>@<dvc exp name>",
        )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="where to write the report (default: reports/compare/<A>_vs_<B>.html)",
    )
    parser.add_argument(
        "--no-log", action="store_true", help="do not log the report to the two runs"
    )
    args = parser.parse_args(argv)
    try:
        comparison = build(args.a, args.b)
        page = report.render(comparison)
        name = artifact_name(comparison.a, comparison.b)
        out = args.output or config.compare_reports_dir() / name
        atomic_write(out, page)
        if not args.no_log:
            with tempfile.TemporaryDirectory(prefix="compare-") as tmp:
                copy = Path(tmp) / name
                copy.write_text(page)
                for run_id in dict.fromkeys((comparison.a.run_id, comparison.b.run_id)):
                    tracking.log_artifact_to_run(run_id, copy, config.COMPARE_ARTIFACTS)
    except SameRunError as exc:
        print(f"compare: error: {exc}", file=sys.stderr)
        return 2
    except (LookupError, ValueError, OSError) as exc:
        print(f"compare: error: {exc}", file=sys.stderr)
        return 1
    c = comparison
    logged = "" if args.no_log else f"; logged to both runs as {config.COMPARE_ARTIFACTS}/{name}"
    ci_a, ci_b = c.interval(c.a), c.interval(c.b)
    print(
        f"compare: A {c.a.short} accuracy {c.accuracy(c.a):.4f} "
        f"(95% CI {ci_a.low:.4f}-{ci_a.high:.4f}), B {c.b.short} {c.accuracy(c.b):.4f} "
        f"(95% CI {ci_b.low:.4f}-{ci_b.high:.4f}) on {c.n} test images: B fixes "
        f"{len(c.fixed)}, breaks {len(c.broken)}, {len(c.both_wrong)} wrong in both"
    )
    print(f"compare: {c.verdict()}")
    print(f"compare: report {out}{logged}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
