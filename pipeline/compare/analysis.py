"""What changed between run A and run B, image by image: every number of the two-run report.

``analyse`` works from each run's per-image test predictions (``evaluation/predictions.csv``,
one row per test image in the order of ``data/prepared/<dataset>/test.npz``) and computes
both confusion matrices and their difference, the per-class precision/recall/F1 deltas, the
images B fixed and broke, and what both still get wrong; params, test metrics, validation
curves and provenance come from the runs themselves. The uncertainty of each comparison comes
from pipeline/report/stats.py: each accuracy's 95% Wilson interval, and McNemar's exact test
on the images where the runs disagree (fixed by B vs broken by B), overall and per class.
Pure NumPy/scikit-learn/SciPy, no MLflow: the caller fetches the runs
(pipeline/compare/cli.py); pipeline/compare/report.py draws the page.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from pipeline.core import numenv
from pipeline.report.metrics import confusion
from pipeline.report.stats import Interval, McNemar, mcnemar, wilson

MAX_THUMBNAILS = 120  # per grid; the JSON block lists every index
MAX_SHARED_CONFUSIONS = 10
ALPHA = 0.05  # the headline's significance level, on McNemar's two-sided p
CURVE_METRICS = ("val_loss", "val_accuracy")
LOWER_IS_BETTER = ("loss", "errors")
PROVENANCE_TAGS = (
    ("preset", "preset"),
    ("family", "family"),
    ("dataset", "dataset"),
    ("dataset_dvc_md5", "data hash (DVC md5)"),
    ("mlflow.source.git.commit", "git commit"),
    ("git_dirty", "uncommitted changes"),
    ("dvc_exp_name", "DVC experiment"),
    ("repro_id", "dvc repro id"),
)


class CompareError(ValueError):
    """The two runs cannot be compared; the message says why."""


@dataclass
class RunData:
    """What the report needs of one run (fetched by pipeline/compare/cli.py)."""

    label: str  # "A" or "B"
    run_id: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]  # latest value of every metric
    history: dict[str, list[tuple[int, float]]]  # CURVE_METRICS: (epoch, value)
    actual: np.ndarray  # (N,) true class index of test image i
    predicted: np.ndarray  # (N,) predicted class index
    start_time: int | None = None  # ms since the epoch
    store: str = ""

    @property
    def name(self) -> str:
        return self.tags.get("preset") or self.tags.get("mlflow.runName") or "?"

    @property
    def short(self) -> str:
        return f"{self.name} ({self.run_id[:8]})"


def classes_of(params: dict[str, str]) -> list[str] | None:
    """The class list of a run's dataset from its flattened params (dataset.classes.<i>)."""
    found = {}
    prefix = "dataset.classes."
    for key, value in params.items():
        if key.startswith(prefix) and key[len(prefix) :].isdigit():
            found[int(key[len(prefix) :])] = value
    return [found[i] for i in sorted(found)] or None


@dataclass
class Comparison:
    a: RunData
    b: RunData
    classes: list[str]
    confusion_a: np.ndarray
    confusion_b: np.ndarray
    per_class: list[dict]  # sorted by |delta F1|, largest first
    fixed: np.ndarray  # indices: A wrong, B right
    broken: np.ndarray  # indices: A right, B wrong
    both_wrong: np.ndarray  # indices: both wrong
    shared_confusions: list[dict]  # (true, A, B, count), most common first
    params_diff: list[tuple[str, str | None, str | None]]
    metrics_rows: list[tuple[str, float | None, float | None]]
    warnings: list[str] = field(default_factory=list)
    images: np.ndarray | None = None  # (N, 28, 28[, 1]) in [0, 1], when available locally
    images_note: str = ""

    @property
    def confusion_diff(self) -> np.ndarray:
        return self.confusion_b - self.confusion_a

    @property
    def same_mistake(self) -> int:
        idx = self.both_wrong
        return int((self.a.predicted[idx] == self.b.predicted[idx]).sum())

    @property
    def n(self) -> int:
        return len(self.a.actual)

    def correct(self, run: RunData) -> int:
        return int((run.actual == run.predicted).sum())

    def accuracy(self, run: RunData) -> float:
        return float((run.actual == run.predicted).mean())

    def interval(self, run: RunData) -> Interval:
        """The 95% Wilson interval of ``run``'s test accuracy."""
        return wilson(self.correct(run), self.n)

    @property
    def mcnemar_test(self) -> McNemar:
        """McNemar's exact test on the images where A and B disagree."""
        return mcnemar(len(self.fixed), len(self.broken))

    @property
    def significant(self) -> bool:
        return self.mcnemar_test.p_two_sided < ALPHA

    def verdict(self) -> str:
        """The headline in plain words: which run is better, by how much, and whether that is
        more than noise (McNemar's two-sided p against ALPHA)."""
        t = self.mcnemar_test
        if t.discordant == 0:
            return "A and B get the same test images right (none fixed, none broken): no difference"
        diff = t.fixed - t.broken
        if diff == 0:
            head = "A and B are equally accurate"
        else:
            side = "better" if diff > 0 else "worse"
            head = f"B is {side} by {100 * abs(diff) / self.n:.2f} percentage points"
        counts = f"{_images(t.fixed)} fixed, {t.broken} broken"
        tail = f"significant at {ALPHA:g}" if self.significant else "within noise"
        return f"{head} ({counts}): McNemar p = {format_p(t.p_two_sided)}, {tail}"

    def data(self) -> dict:
        """Every number the page shows, as plain JSON types."""
        test = self.mcnemar_test
        return {
            "a": {"run_id": self.a.run_id, "name": self.a.name},
            "b": {"run_id": self.b.run_id, "name": self.b.name},
            "classes": self.classes,
            "n_test": len(self.a.actual),
            "accuracy_a": self.accuracy(self.a),
            "accuracy_b": self.accuracy(self.b),
            "accuracy_a_interval": self.interval(self.a).as_list(),
            "accuracy_b_interval": self.interval(self.b).as_list(),
            "mcnemar": {
                "fixed": test.fixed,
                "broken": test.broken,
                "p_two_sided": test.p_two_sided,
                "p_b_better": test.p_better,
                "alpha": ALPHA,
                "significant": self.significant,
            },
            "verdict": self.verdict(),
            "confusion_a": self.confusion_a.tolist(),
            "confusion_b": self.confusion_b.tolist(),
            "confusion_diff": self.confusion_diff.tolist(),
            "per_class": self.per_class,
            "fixed_by_b": self.fixed.tolist(),
            "broken_by_b": self.broken.tolist(),
            "both_wrong": len(self.both_wrong),
            "both_wrong_same_prediction": self.same_mistake,
            "shared_confusions": self.shared_confusions,
            "params_diff": [list(r) for r in self.params_diff],
            "environment": [list(r) for r in environment_rows(self.a, self.b)],
            "warnings": self.warnings,
        }


def _images(count: int) -> str:
    return f"{count} image" if count == 1 else f"{count} images"


def format_p(p: float, alpha: float = ALPHA) -> str:
    """``p`` to 2 significant digits, more when rounding would move it across ``alpha``."""
    for digits in (2, 3, 4, 6):
        text = f"{p:.{digits}g}"
        if (float(text) < alpha) == (p < alpha):
            return text
    return repr(p)


# --------------------------------------------------------------------------- analysis


def _per_class(a: RunData, b: RunData, classes: list[str]) -> list[dict]:
    labels = np.arange(len(classes))
    figs = {}
    for run in (a, b):
        p, r, f, s = precision_recall_fscore_support(
            run.actual, run.predicted, labels=labels, zero_division=0
        )
        figs[run.label] = (p, r, f, s)
    right_a, right_b = a.predicted == a.actual, b.predicted == b.actual
    rows = []
    for i, name in enumerate(classes):
        row: dict = {"class": name, "support": int(figs["A"][3][i])}
        for j, metric in enumerate(("precision", "recall", "f1")):
            va, vb = float(figs["A"][j][i]), float(figs["B"][j][i])
            row |= {f"{metric}_a": va, f"{metric}_b": vb, f"{metric}_delta": vb - va}
        mine = a.actual == i  # the recall delta is (fixed - broken) / support on these
        fixed, broken = (mine & right_b & ~right_a).sum(), (mine & right_a & ~right_b).sum()
        test = mcnemar(int(fixed), int(broken))
        row |= {"fixed": test.fixed, "broken": test.broken, "recall_p": test.p_two_sided}
        rows.append(row)
    return sorted(rows, key=lambda r: (-abs(r["f1_delta"]), -abs(r["recall_delta"]), r["class"]))


def _params_diff(a: RunData, b: RunData) -> list[tuple[str, str | None, str | None]]:
    keys = sorted(set(a.params) | set(b.params))
    rows = [(k, a.params.get(k), b.params.get(k)) for k in keys]
    return [r for r in rows if r[1] != r[2]]


def _metrics_rows(a: RunData, b: RunData) -> list[tuple[str, float | None, float | None]]:
    keys = sorted(
        k for k in set(a.metrics) | set(b.metrics) if k.startswith("test_") and "_class_" not in k
    )
    return [(k, a.metrics.get(k), b.metrics.get(k)) for k in keys]


def environment_rows(a: RunData, b: RunData) -> list[tuple[str, str | None, str | None]]:
    """Both runs' numeric environments (``env.*`` tags, pipeline/core/numenv.py), one row a
    field: the fields that change numbers first, then the rest."""
    ea, eb = numenv.from_tags(a.tags), numenv.from_tags(b.tags)
    order = [*numenv.FINGERPRINT_FIELDS, "fingerprint", "cpu_model", "python"]
    keys = [k for k in order if k in ea or k in eb]
    keys += sorted((set(ea) | set(eb)) - set(keys))
    return [(k, ea.get(k), eb.get(k)) for k in keys]


def _warnings(a: RunData, b: RunData) -> list[str]:
    out = []
    ea, eb = numenv.from_tags(a.tags), numenv.from_tags(b.tags)
    if ea.get("fingerprint") and eb.get("fingerprint") and ea["fingerprint"] != eb["fingerprint"]:
        fields = ", ".join(
            f"{k} {ea.get(k, '–')} / {eb.get(k, '–')}" for k in numenv.differences(ea, eb)
        )
        out.append(
            f"The numeric environments differ (A / B: {fields}): the runs took different "
            "floating-point kernels, so a few images may flip with no change to the model; "
            "judge small differences against seed-to-seed noise (README, Reproducibility)."
        )
    ha, hb = a.tags.get("dataset_dvc_md5"), b.tags.get("dataset_dvc_md5")
    if ha and hb and ha != hb:
        out.append(
            f"The data hashes differ (A: {a.tags.get('dataset', '?')} {ha}, "
            f"B: {b.tags.get('dataset', '?')} {hb}): this comparison mixes datasets, so a "
            "difference may come from the data rather than from the model or its params."
        )
    elif not (ha and hb):
        missing = " and ".join(r.label for r, h in ((a, ha), (b, hb)) if not h)
        out.append(
            f"No data hash recorded for run {missing}: cannot tell whether both runs were "
            "trained on the same data."
        )
    return out


def analyse(a: RunData, b: RunData, classes: list[str]) -> Comparison:
    """Every number of the report, from the two runs' per-image predictions."""
    if len(a.actual) == 0 or len(b.actual) == 0:
        empty = " and ".join(r.label for r in (a, b) if len(r.actual) == 0)
        raise CompareError(f"run {empty} has no per-image test predictions (0 rows)")
    if len(a.actual) != len(b.actual):
        raise CompareError(
            f"the runs were scored on different test sets (A: {len(a.actual)} images, "
            f"B: {len(b.actual)} images)"
        )
    if not np.array_equal(a.actual, b.actual):
        n = int((a.actual != b.actual).sum())
        raise CompareError(
            f"the runs were scored on different test sets (the true labels differ at {n} of "
            f"{len(a.actual)} images)"
        )
    k = len(classes)
    for run in (a, b):
        bad = (run.predicted < 0) | (run.predicted >= k) | (run.actual < 0) | (run.actual >= k)
        if bad.any():
            raise CompareError(
                f"run {run.label} {run.short}: predictions hold labels outside its classes "
                f"{', '.join(classes)}"
            )
    cm_a, _ = confusion(a.actual, a.predicted, k)
    cm_b, _ = confusion(b.actual, b.predicted, k)
    wrong_a, wrong_b = a.predicted != a.actual, b.predicted != b.actual
    both = np.flatnonzero(wrong_a & wrong_b)
    triples = Counter(
        zip(
            a.actual[both].tolist(),
            a.predicted[both].tolist(),
            b.predicted[both].tolist(),
            strict=True,
        )
    )
    shared = [
        {"true": classes[t], "a": classes[pa], "b": classes[pb], "count": n}
        for (t, pa, pb), n in sorted(triples.items(), key=lambda kv: (-kv[1], kv[0]))
    ][:MAX_SHARED_CONFUSIONS]
    return Comparison(
        a=a,
        b=b,
        classes=classes,
        confusion_a=cm_a.astype(np.int64),
        confusion_b=cm_b.astype(np.int64),
        per_class=_per_class(a, b, classes),
        fixed=np.flatnonzero(wrong_a & ~wrong_b),
        broken=np.flatnonzero(~wrong_a & wrong_b),
        both_wrong=both,
        shared_confusions=shared,
        params_diff=_params_diff(a, b),
        metrics_rows=_metrics_rows(a, b),
        warnings=_warnings(a, b),
    )
